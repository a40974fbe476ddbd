#!/usr/bin/env bash
# The pod-side job executor. A job dir holds job.json (a remote.jobspec
# RenderJob) and the scene; the job's output goes where job.json says.
#
#   pod_agent.sh JOBDIR            start the job detached, print its status (one JSON line)
#   pod_agent.sh --status JOBDIR   print its status as one JSON line
#   pod_agent.sh --cancel JOBDIR   stop it; status becomes "cancelled"
#
# The job runs under setsid/nohup so that a dropped SSH connection does not
# kill it; the local side reconnects and polls `status`, which only reads a
# few small files. Starting a job that already has a status prints that
# status and starts nothing: a job is never rendered (or paid for) twice.
#
# Status files in JOBDIR: `state` (queued|running|done|failed|cancelled),
# `status.json` (state, times, exit code, error), `render.log`, `pid`, `boot_id`;
# render_job.py's `progress.json` (items total/done/failed/current) is printed
# with the status as its "items".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORKSPACE="${WORKSPACE:-/workspace}"

usage() { echo "usage: pod_agent.sh [--status|--cancel] JOBDIR" >&2; exit 2; }
case "$#:${1:-}" in
1:-*) usage ;;
1:*) action=--start ;;
2:--status | 2:--cancel | 2:--run) action="$1"; shift ;;
*) usage ;;
esac
jobdir="$(cd -- "$1" 2>/dev/null && pwd)" || { echo "pod_agent: no job dir $1" >&2; exit 2; }

boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }

# write_status STATE [EXIT_CODE] [ERROR]: state file and status.json, atomically.
write_status() {
    local state="$1" code="${2:-}" error="${3:-}"
    python3 - "$jobdir" "$state" "$code" "$error" <<'PY'
import json, os, sys, time
jobdir, state, code, error = sys.argv[1:5]
path = os.path.join(jobdir, "status.json")
try:
    status = json.load(open(path))
except (OSError, ValueError):
    status = {}
now = time.time()
status["state"] = state
status.setdefault("queued_at", now)
if state == "running":
    status["started_at"] = now
if state in ("done", "failed", "cancelled"):
    status["finished_at"] = now
if code != "":
    status["exit_code"] = int(code)
if error:
    status["error"] = error
for name, text in (("status.json", json.dumps(status)), ("state", state)):
    tmp = os.path.join(jobdir, "." + name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, os.path.join(jobdir, name))
PY
}

print_status() {
    local state pid
    state="$(cat "$jobdir/state" 2>/dev/null || echo none)"
    if [ "$state" = "running" ] || [ "$state" = "queued" ]; then
        pid="$(cat "$jobdir/pid" 2>/dev/null || echo 0)"
        if [ "$(cat "$jobdir/boot_id" 2>/dev/null)" != "$(boot_id)" ] || ! kill -0 "$pid" 2>/dev/null; then
            # Re-read: the job may have finished between the two reads.
            state="$(cat "$jobdir/state")"
            if [ "$state" = "running" ] || [ "$state" = "queued" ]; then
                write_status failed "" "the job's process is gone (pod restarted or process killed); see render.log"
            fi
        fi
    fi
    if [ ! -f "$jobdir/status.json" ]; then echo '{"state": "none"}'
    elif [ -f "$jobdir/progress.json" ]; then
        # A batch's progress (render_job.py writes it after every item) travels in the same line.
        python3 -c 'import json, sys
status = json.load(open(sys.argv[1]))
try:
    status["items"] = json.load(open(sys.argv[2]))
except (OSError, ValueError):
    pass
print(json.dumps(status))' "$jobdir/status.json" "$jobdir/progress.json"
    else cat "$jobdir/status.json"; fi
}

case "$action" in
--start)
    [ -f "$jobdir/job.json" ] || { echo "pod_agent: $jobdir has no job.json" >&2; exit 2; }
    exec 9>"$jobdir/.lock"
    flock 9
    if [ -f "$jobdir/state" ]; then print_status; exit 0; fi
    [ -f "$WORKSPACE/posefactory/blender.env" ] ||
        { echo "pod_agent: no Blender recorded; run setup_pod.sh first" >&2; exit 3; }
    write_status queued
    boot_id > "$jobdir/boot_id"
    # 9>&- : the detached job must not hold the start lock.
    setsid nohup bash "$here/pod_agent.sh" --run "$jobdir" </dev/null >/dev/null 2>&1 9>&- &
    echo $! > "$jobdir/pid"
    print_status
    ;;
--run)  # internal: the detached job itself
    # The job inherits the start command's environment (the local side passes
    # STABILITY_API_KEY there); $WORKSPACE/.env is read by render_job.py only
    # when that is absent, so the key given with the job wins.
    set -a
    # shellcheck disable=SC1091
    . "$WORKSPACE/posefactory/blender.env"
    set +a
    # Under the lock, so that a cancel that came first is never overwritten.
    exec 9>"$jobdir/.lock"
    flock 9
    if [ "$(cat "$jobdir/state")" = "cancelled" ]; then exit 0; fi
    write_status running
    exec 9>&-
    if [ "$POSEFACTORY_RUNNER" = "python" ]; then
        cmd=("$POSEFACTORY_EXECUTABLE" "$here/render_job.py" "$jobdir/job.json")
    else
        # --enable-autoexec: the job is the artist's own scene, its scripted drivers must run
        # (factory preferences turn Python auto-run off).
        cmd=("$POSEFACTORY_EXECUTABLE" --background --factory-startup --enable-autoexec --python "$here/render_job.py" -- "$jobdir/job.json")
    fi
    set +e
    ( cd "$jobdir" && exec "${cmd[@]}" ) >"$jobdir/render.log" 2>&1
    code=$?
    set -e
    if [ "$(cat "$jobdir/state")" = "cancelled" ]; then exit 0; fi
    if [ $code -eq 0 ]; then
        write_status done 0
    else
        error="$(grep '^render_job: ' "$jobdir/render.log" | tail -n 1 | sed 's/^render_job: //')"
        write_status failed "$code" "${error:-render job exited with $code; see render.log}"
    fi
    ;;
--status)
    print_status
    ;;
--cancel)
    exec 9>"$jobdir/.lock"
    flock 9
    state="$(cat "$jobdir/state" 2>/dev/null || echo none)"
    if [ "$state" = "running" ] || [ "$state" = "queued" ]; then
        write_status cancelled "" "cancelled by the user"
        pid="$(cat "$jobdir/pid" 2>/dev/null || echo 0)"
        [ "$pid" -gt 0 ] && kill -TERM -- "-$pid" 2>/dev/null || true
    fi
    print_status
    ;;
esac
