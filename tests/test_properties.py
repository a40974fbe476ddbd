"""Property tests for the parsers of untrusted input other than the pod's
output (that is tests/test_pod_output.py): the queue's request lines and the
job contract. Arbitrary input never crashes them; it is answered or refused."""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote.bridge.agent import Agent
from remote.bridge.api import Bridge
from remote.bridge.queue import LineTail
from remote.core.jobspec import JobValidationError, RenderJob

json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(line=st.one_of(st.binary(max_size=300),
                      st.dictionaries(st.sampled_from(["id", "host", "op", "command", "timeout", "env", "src", "dst"]),
                                      json_values).map(lambda d: json.dumps(d).encode())))
def test_any_request_line_is_answered_invalid_or_skipped_never_a_crash(tmp_path, line):
    # A bridge with no hosts: nothing can run, so every line must be refused in one result.
    agent = Agent(Bridge({}), tmp_path / "queue")
    result = agent.handle_line(1, line.replace(b"\n", b" "))
    assert result is None or (result.status == "invalid" and result.error and "line 1" in result.error)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(chunks=st.lists(st.binary(max_size=40), max_size=8))
def test_the_line_tail_yields_exactly_the_complete_lines_written(tmp_path, chunks):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"")
    tail, seen = LineTail(path), []
    for chunk in chunks:
        with open(path, "ab") as handle:
            handle.write(chunk)
        for line in tail.read_new():
            seen.append(line.text)
            tail.advance(line)
    assert seen == Path(path).read_bytes().split(b"\n")[:-1]


@given(data=st.dictionaries(st.sampled_from([f.name for f in RenderJob.__dataclass_fields__.values()] + ["extra"]),
                            json_values))
def test_any_job_file_is_a_valid_job_or_one_validation_error(data):
    try:
        job = RenderJob.from_dict(data)
    except JobValidationError as exc:
        assert str(exc)
        return
    assert job.prompt.strip() and (job.width, job.height) and 1 <= job.variations <= 10
