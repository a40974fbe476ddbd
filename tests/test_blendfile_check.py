"""A file that is not a .blend is refused on the laptop, before anything is uploaded."""
from __future__ import annotations

import gzip
import threading

import pytest
import zstandard

from remote.core.blendfile import NotABlendFile, check_blend_file
from remote.jobs.pipeline import run_job
from tests.test_pipeline_e2e import Recorder, make_job


def test_plain_and_compressed_blend_headers_pass(tmp_path, sample_scene):
    assert sample_scene.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # Blender 5 saves Zstandard-compressed
    check_blend_file(sample_scene)
    with open(sample_scene, "rb") as handle:
        plain = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True).read()
    (tmp_path / "plain.blend").write_bytes(plain)
    check_blend_file(tmp_path / "plain.blend")
    (tmp_path / "old.blend").write_bytes(gzip.compress(plain))
    check_blend_file(tmp_path / "old.blend")


@pytest.mark.parametrize("content, reason", [
    (b"\x89PNG\r\n\x1a\n....", "is not a .blend file"),
    (b"", "is not a .blend file"),
    (gzip.compress(b"hello world"), "is not a .blend file"),
    (zstandard.ZstdCompressor().compress(b"hello world"), "is not a .blend file"),
    (b"\x1f\x8b\x08garbage", "damaged"),
])
def test_other_files_are_refused_with_one_line(tmp_path, content, reason):
    path = tmp_path / "scene.blend"
    path.write_bytes(content)
    with pytest.raises(NotABlendFile, match=reason):
        check_blend_file(path)


def test_the_pipeline_refuses_a_non_blend_before_connecting(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEFACTORY_DATA_DIR", str(tmp_path / "data"))
    fake = tmp_path / "notes.blend"
    fake.write_text("just some notes")
    progress = Recorder()
    result = run_job(make_job(), fake, host="local", hosts_file=None, local_output_dir=tmp_path / "out", api_key=None,
                     progress=progress, cancel=threading.Event(), record_path=tmp_path / "record.json")
    assert result.status == "failed" and "is not a .blend file" in result.error
    assert progress.events == [] and not (tmp_path / "data" / "local-pod").exists()
