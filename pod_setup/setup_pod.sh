#!/usr/bin/env bash
# Re-create everything a pod needs outside $WORKSPACE. Only $WORKSPACE (the
# volume disk, /workspace on RunPod) survives a pod restart, so this runs at
# every start; it is idempotent: a second run changes nothing and is quick.
#
#   WORKSPACE=/workspace bash setup_pod.sh
#
# Environment:
#   WORKSPACE               the persistent folder (default /workspace)
#   HOME                    where config links are restored (~/.config/...)
#   POSEFACTORY_BPY_PYTHON  a Python that can `import bpy` (the bpy wheel); used
#                           instead of a Blender binary when given
#   BLENDER_VERSION, BLENDER_SHA256  the pinned Blender to install when none is found
#   POSEFACTORY_BLENDER_VERSION      the artist's Blender (4.2, 4.2.3): installed by
#                           install_blender.sh into $WORKSPACE/blender/<version>/ and used
# Prints one status line; exits non-zero with a clear message on failure.
set -euo pipefail

WORKSPACE="${WORKSPACE:-/workspace}"
# The pinned Blender matches the bpy module the tests use (bpy==5.0.1). Its
# checksum is the published one for blender-5.0.1-linux-x64.tar.xz; override
# both together to pin another release.
BLENDER_VERSION="${BLENDER_VERSION:-5.0.1}"
BLENDER_SHA256="${BLENDER_SHA256:-8019580ee1b7262e505f4196a00237ccf743c88d205b38d34201510676e60b09}"
BLENDER_URL="${BLENDER_URL:-https://download.blender.org/release/Blender${BLENDER_VERSION%.*}/blender-${BLENDER_VERSION}-linux-x64.tar.xz}"
state_dir="$WORKSPACE/posefactory"
changes=()

fail() { echo "setup_pod: error: $*" >&2; exit 1; }
# NAME=VALUE, shell-quoted: blender.env is sourced by pod_agent.sh, and a
# workspace path may hold spaces, quotes or $(...).
env_line() { printf '%s=%q\n' "$1" "$2"; }

[ -d "$WORKSPACE" ] || fail "workspace $WORKSPACE does not exist (is the volume mounted?)"
for dir in scripts output jobs blender-addons .config posefactory; do
    if [ ! -d "$WORKSPACE/$dir" ]; then mkdir -p "$WORKSPACE/$dir"; changes+=("created $dir"); fi
done

# Config kept in the workspace (rclone, etc.) is linked back into $HOME.
mkdir -p "$HOME/.config"
for item in "$WORKSPACE"/.config/*; do
    [ -e "$item" ] || continue
    link="$HOME/.config/$(basename "$item")"
    if [ "$(readlink "$link" 2>/dev/null)" != "$item" ]; then
        if [ -e "$link" ] && [ ! -L "$link" ]; then
            fail "$link exists and is not a link to $item; move it into $WORKSPACE/.config first"
        fi
        ln -sfn "$item" "$link"
        changes+=("linked ~/.config/$(basename "$item")")
    fi
done

# Secrets: refuse a .env that others can read.
env_file="$WORKSPACE/.env"
if [ -e "$env_file" ]; then
    mode="$(stat -c %a "$env_file")"
    if [ $((8#$mode & 8#077)) -ne 0 ]; then
        fail "$env_file is readable by others (mode $mode); run: chmod 600 $env_file"
    fi
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi

# Blender: the bpy wheel's Python, a blender on PATH, one installed in the
# workspace, or a fresh download of the pinned version.
blender_env="$state_dir/blender.env"
if [ -n "${POSEFACTORY_BPY_PYTHON:-}" ]; then
    wanted="$(env_line POSEFACTORY_RUNNER python; env_line POSEFACTORY_EXECUTABLE "$POSEFACTORY_BPY_PYTHON")"
    # Importing bpy takes about a second and setup runs before every job:
    # check a Python only when it is not the one already recorded.
    if [ "$(cat "$blender_env" 2>/dev/null)" != "$wanted" ]; then
        "$POSEFACTORY_BPY_PYTHON" -c 'import bpy, yaml, requests' 2>/dev/null ||
            fail "POSEFACTORY_BPY_PYTHON=$POSEFACTORY_BPY_PYTHON cannot import bpy, yaml and requests"
    fi
else
    blender=""
    if [ -n "${POSEFACTORY_BLENDER_VERSION:-}" ]; then
        blender="$(bash "$(dirname "${BASH_SOURCE[0]}")/install_blender.sh" "$POSEFACTORY_BLENDER_VERSION")" ||
            fail "cannot provide Blender $POSEFACTORY_BLENDER_VERSION (see above)"
    fi
    [ -n "$blender" ] || blender="$(command -v blender || true)"
    [ -n "$blender" ] || { [ -x "$WORKSPACE/blender/blender" ] && blender="$WORKSPACE/blender/blender"; } || true
    if [ -z "$blender" ]; then
        archive="$WORKSPACE/blender-$BLENDER_VERSION.tar.xz"
        curl -fsSL --retry 3 -o "$archive.part" "$BLENDER_URL" ||
            fail "cannot download Blender from $BLENDER_URL (offline?)"
        echo "$BLENDER_SHA256  $archive.part" | sha256sum -c --quiet - >/dev/null 2>&1 ||
            { rm -f "$archive.part"; fail "Blender download from $BLENDER_URL does not match sha256 $BLENDER_SHA256"; }
        mv "$archive.part" "$archive"
        mkdir -p "$WORKSPACE/blender"
        tar -xJf "$archive" -C "$WORKSPACE/blender" --strip-components=1
        rm -f "$archive"
        blender="$WORKSPACE/blender/blender"
        changes+=("installed Blender $BLENDER_VERSION")
    fi
    # The pod helper's own modules (yaml) for Blender's bundled Python.
    pylib="$state_dir/pylib"
    if [ ! -f "$pylib/.installed" ]; then
        bundled=("$(dirname "$(readlink -f "$blender")")"/*/python/bin/python3*)
        blender_python="${bundled[0]}"
        [ -x "$blender_python" ] || blender_python=python3
        "$blender_python" -m pip install -q --target "$pylib" pyyaml requests ||
            fail "cannot install pyyaml/requests for Blender's Python (offline?)"
        touch "$pylib/.installed"
        changes+=("installed Python modules")
    fi
    wanted="$(env_line POSEFACTORY_RUNNER blender; env_line POSEFACTORY_EXECUTABLE "$blender"; env_line POSEFACTORY_PYLIB "$pylib")"
fi
if [ "$(cat "$blender_env" 2>/dev/null)" != "$wanted" ]; then
    printf '%s\n' "$wanted" > "$blender_env"
    changes+=("recorded Blender")
fi

# Retention: ended job dirs whose outputs reached the laptop (`downloaded`;
# others are kept four times as long) and code bundles no live job runs,
# all older than POSEFACTORY_RETENTION_DAYS (default 7). A running or queued
# job's files are never touched.
retention_days="${POSEFACTORY_RETENTION_DAYS:-7}"
live_refs=""
for jobdir in "$WORKSPACE"/jobs/*/; do
    jobdir="${jobdir%/}"
    state="$(cat "$jobdir/state" 2>/dev/null || echo none)"
    if [ "$state" = "running" ] || [ "$state" = "queued" ]; then
        live_refs+="$(cat "$jobdir/job.json" 2>/dev/null) $(cat "$jobdir/pid" 2>/dev/null)"$'\n'
        continue
    fi
    # Not downloaded (the laptop may still re-attach): kept four times as long.
    keep_days="$retention_days"; [ -f "$jobdir/downloaded" ] || keep_days=$((retention_days * 4))
    if [ -n "$(find "$jobdir" -maxdepth 0 -mtime +"$keep_days" 2>/dev/null)" ]; then
        rm -rf -- "$jobdir" && removed_jobs=$((${removed_jobs:-0} + 1))
    fi
done
current="$(readlink "$state_dir/pod_setup" 2>/dev/null || true)"
for code in "$state_dir"/code/*/ "$state_dir"/.old-*; do
    code="${code%/}"
    [ -e "$code" ] || continue
    case "$current" in *"$(basename "$code")"*) continue ;; esac
    # A running job's processes have the bundle's path in their command lines.
    if pgrep -f -- "$(basename "$code")" >/dev/null 2>&1; then continue; fi
    if [ -n "$(find "$code" -maxdepth 0 -mtime +"$retention_days" 2>/dev/null)" ]; then
        rm -rf -- "$code" "$state_dir/code/bundle-$(basename "$code").tar.gz" && removed_code=$((${removed_code:-0} + 1))
    fi
done
if [ -n "${removed_jobs:-}${removed_code:-}" ]; then
    changes+=("retention (${retention_days} days) removed ${removed_jobs:-0} job dir(s), ${removed_code:-0} old bundle(s)")
fi

# The scene store (scene_store.py): every scene file once, by content, within
# POSEFACTORY_STORE_BUDGET_GB (default 20); the least recently used files go
# first, never one a queued or running job's tree links. Scenes an earlier
# version kept as $WORKSPACE/scenes/<sha>.blend move in once.
store_tool=(python3 "$(dirname "${BASH_SOURCE[0]}")/scene_store.py" --store "$state_dir/store")
if [ -d "$WORKSPACE/scenes" ]; then
    migrated="$("${store_tool[@]}" migrate "$WORKSPACE/scenes")" || fail "moving old scenes into the store failed"
    changes+=("moved the old scene copies into the store ($migrated)")
fi
gc="$("${store_tool[@]}" gc --jobs "$WORKSPACE/jobs")" || fail "the scene store's clean-up failed"
case "$gc" in *'"removed": 0,'*) ;; *) changes+=("store clean-up $gc") ;; esac
store_line="$("${store_tool[@]}" status --line)" || fail "reading the scene store failed"
# Scenes travel as zstd patches when the pod can decode them (whole files otherwise).
if ! command -v zstd >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null 2>&1 ||
          { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null 2>&1; }; } &&
            changes+=("installed zstd")
    fi
    command -v zstd >/dev/null 2>&1 || store_line+=", no zstd: scenes go whole"
fi

# The AI backends' optional parts (diffusers venv + models, AI Render), each only when asked.
# shellcheck disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/setup_backends.sh"

# Kernel warm-up: a fresh pod's first Cycles GPU render compiles its kernels for minutes. Set-up pays
# that once per Blender and GPU set, on a tiny scene (warm_kernels.py), not the artist's first job.
# POSEFACTORY_WARM_KERNELS=1 runs it without nvidia-smi's word that there is a GPU (other GPUs).
gpus="$(nvidia-smi -L 2>/dev/null || true)"
if [ -n "$gpus" ] || [ "${POSEFACTORY_WARM_KERNELS:-}" = "1" ]; then
    kernels_mark="$state_dir/kernels/$(printf '%s\n%s\n' "$(cat "$blender_env")" "$gpus" | sha256sum | cut -c1-16)"
    if [ ! -f "$kernels_mark" ]; then
        warm_script="$(dirname "${BASH_SOURCE[0]}")/warm_kernels.py"
        warmed="$( . "$blender_env"
            if [ "$POSEFACTORY_RUNNER" = python ]; then cmd=("$POSEFACTORY_EXECUTABLE" "$warm_script")
            else cmd=("$POSEFACTORY_EXECUTABLE" --background --factory-startup --python "$warm_script"); fi
            timeout "${POSEFACTORY_WARM_KERNELS_TIMEOUT_S:-1800}" "${cmd[@]}" 2>&1 | grep "^warm_kernels: " | tail -n 1 || true)"
        if [ -n "$warmed" ]; then
            mkdir -p "$state_dir/kernels"
            printf '%s\n' "${warmed#warm_kernels: }" > "$kernels_mark"
            changes+=("${warmed#warm_kernels: }")
        else
            # Not fatal: the first job pays the compile instead; the next set-up tries again.
            changes+=("the render-kernel warm-up did not finish (the first job compiles them)")
        fi
    fi
fi

runner="$(. "$blender_env" && echo "$POSEFACTORY_EXECUTABLE")"
if [ ${#changes[@]} -eq 0 ]; then
    echo "setup_pod: ok, nothing changed (workspace $WORKSPACE, blender $runner, $store_line)"
else
    echo "setup_pod: ok, $(IFS=,; echo "${changes[*]}" | sed 's/,/, /g') (workspace $WORKSPACE, blender $runner, $store_line)"
fi
