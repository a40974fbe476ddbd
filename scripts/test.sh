#!/usr/bin/env bash
# The whole test suite, from a fresh clone: bootstrap, then pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/bootstrap.sh"
cd "$repo"
# Lint and type-check (mypy from cold takes a minute or two) while the extra Blender releases install;
# a finding fails the run before the long suite starts.
checks="$(mktemp)"
(
    set -e
    .venv/bin/ruff check --quiet .
    .venv/bin/mypy
    .venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
) > "$checks" 2>&1 &
checking=$!
"$repo/scripts/bootstrap.sh" --releases
checked=0
wait "$checking" || checked=$?
cat "$checks"
rm -f "$checks"
[ "$checked" -eq 0 ] || exit "$checked"
# Two workers (one per core of the CI machine), a test file each at a time: module fixtures stay in one
# worker, and most of a test's time is a Blender process starting or a job waiting on its pod.
exec .venv/bin/python -m pytest -n "${POSEFACTORY_TEST_WORKERS:-2}" --dist loadfile "$@"
