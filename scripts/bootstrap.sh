#!/usr/bin/env bash
# Creates what the demo and the tests need on a fresh Debian/Ubuntu machine:
# OpenSSH's sshd and Chromium (apt, when root and missing) and .venv with the project's
# runtime and dev dependencies. Idempotent: a second run only checks.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
[ -x /usr/lib/openssh/sftp-server ] || [ -x /usr/libexec/openssh/sftp-server ] || need_apt+=(openssh-sftp-server)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
# The local pod decodes scene deltas with zstd --patch-from, as setup_pod.sh makes a real pod do.
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
# The dashboard's browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "bootstrap: missing ${need_apt[*]}; install with: sudo apt-get install ${need_apt[*]}" >&2
    fi
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            python="$candidate"; break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "bootstrap: Python 3.11 is required (bpy==5.0.1 is built for it); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

stamp=.venv/.bootstrap-stamp
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "bootstrap: installing Python dependencies into .venv (bpy is ~1 GB, about a minute)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    # --no-compile: Python compiles what it imports anyway; compiling all of torch and bpy up front doubled the time.
    .venv/bin/python -m pip install -q --no-compile -e ".[dev]"
    echo "$wanted" > "$stamp"
fi

# With --releases (the test suite): the oldest and newest Blender of each Python the extension
# supports, as the bpy module, each in its own venv: the built extension is installed and runs a job
# in each (tests/test_blender_releases.py). bpy 5.0.1 (Python 3.11) is .venv's own; 4.2 LTS is the
# oldest on 3.11, 5.2 LTS the newest on 3.13. The demo does not need them.
[ "${1:-}" = "--releases" ] || exit 0
find_python() {  # a python of version $1 (3.11, 3.13): on PATH or under pyenv
    local candidate
    for candidate in "$(command -v "python$1" || true)" "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$1".*/bin/python; do
        if [ -x "$candidate" ] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$1'.split('.'))))" 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}
extra_blender() {  # venv folder, Python version, bpy requirement
    local folder=$1 version=$2 requirement=$3 base
    if [ "$(cat "$folder/.bpy-stamp" 2>/dev/null)" = "$requirement" ]; then return 0; fi
    if ! base="$(find_python "$version")"; then
        echo "bootstrap: Python $version is needed for $requirement (install it, e.g. with pyenv)" >&2
        return 1
    fi
    echo "bootstrap: installing $requirement into $folder (Python $version, ~1 GB)" >&2
    "$base" -m venv "$folder"
    "$folder/bin/python" -m pip install -q --no-compile "$requirement"
    echo "$requirement" > "$folder/.bpy-stamp"
}
# Side by side: each install is mostly unpacking ~1 GB, and they share nothing.
extra_blender .venv-bpy42 3.11 "bpy==4.2.*" & older=$!
extra_blender .venv-bpy52 3.13 "bpy==5.2.3" & newer=$!
failed=0
wait "$older" || failed=1
wait "$newer" || failed=1
exit "$failed"
