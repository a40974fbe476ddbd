#!/usr/bin/env bash
# The pod-side job executor. A job dir holds job.json (a remote.core.jobspec
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
#
# The key: the start command may carry STABILITY_API_KEY in its environment;
# it is written to JOBDIR/.secret-STABILITY_API_KEY (0600), removed from the
# environment before the job is spawned, and render_job.py reads and deletes
# the file at once, so no process of the job carries it (`ps e`).
#
# One job at a time on the GPU: a job waits ("queued", with the number of
# jobs ahead in `queue_position`) for $WORKSPACE/posefactory/gpu.lock.
# A job's time limit (JOBDIR/time_limit, seconds, from POSEFACTORY_TIME_LIMIT_S
# at start) is enforced with `timeout`; it ends "failed: time limit".
# A failure on a full disk is reported as "pod disk full: ...".
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
    python3 "$here/job_status.py" write "$jobdir" "$state" "$code" "$error"
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
    if [ ! -f "$jobdir/status.json" ]; then echo '{"state": "none"}'; return; fi
    local ahead=-1 other other_state
    if [ "$state" = "queued" ]; then
        # Jobs ahead of this one for the GPU: running ones and those queued before it.
        ahead=0
        for other in "$WORKSPACE"/jobs/*/; do
            other="${other%/}"
            [ "$other" = "$jobdir" ] && continue
            other_state="$(cat "$other/state" 2>/dev/null || true)"
            kill -0 "$(cat "$other/pid" 2>/dev/null || echo 0)" 2>/dev/null || continue  # a stale state
            if [ "$other_state" = "running" ] || { [ "$other_state" = "queued" ] && [ "$other/pid" -ot "$jobdir/pid" ]; }; then
                ahead=$((ahead + 1))
            fi
        done
    fi
    if [ "$ahead" -lt 0 ] && [ ! -f "$jobdir/progress.json" ]; then cat "$jobdir/status.json"; return; fi
    # The queue position and a batch's progress (render_job.py writes it after every item) travel in the same line.
    python3 "$here/job_status.py" show "$jobdir" "$ahead"
}

forget_secrets() { rm -f "$jobdir"/.secret-*; }

# disk_full: the job dir's filesystem has (almost) no space left, or the log says so.
disk_full() {
    local avail
    avail="$(df -Pk "$jobdir" 2>/dev/null | awk 'NR == 2 {print $4}')"
    [ -n "$avail" ] && [ "$avail" -lt 1024 ] && return 0
    grep -q "No space left on device" "$jobdir/render.log" 2>/dev/null
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
    if [ -n "${POSEFACTORY_TIME_LIMIT_S:-}" ]; then echo "$POSEFACTORY_TIME_LIMIT_S" > "$jobdir/time_limit"; fi
    for name in STABILITY_API_KEY; do
        if [ -n "${!name:-}" ]; then
            ( umask 077 && printf '%s' "${!name}" > "$jobdir/.secret-$name" )
            unset "$name"
        fi
    done
    # 9>&- : the detached job must not hold the start lock.
    setsid nohup bash "$here/pod_agent.sh" --run "$jobdir" </dev/null >/dev/null 2>&1 9>&- &
    echo $! > "$jobdir/pid"
    print_status
    ;;
--run)  # internal: the detached job itself
    # The job inherits the start command's environment (the local side passes
    # STABILITY_API_KEY there); $WORKSPACE/.env is read by render_job.py only
    # when that is absent, so the key given with the job wins.
    # ai.env (setup_pod.sh, when the diffusers backend was set up): the AI worker's Python.
    set -a
    # shellcheck disable=SC1091
    . "$WORKSPACE/posefactory/blender.env"
    # shellcheck disable=SC1091
    if [ -f "$WORKSPACE/posefactory/ai.env" ]; then . "$WORKSPACE/posefactory/ai.env"; fi
    set +a
    trap forget_secrets EXIT
    # One job at a time on the GPU: wait (state stays "queued") for the pod-wide lock.
    exec 8>"$WORKSPACE/posefactory/gpu.lock"
    flock 8
    # Under the job's lock, so that a cancel that came first is never overwritten.
    exec 9>"$jobdir/.lock"
    flock 9
    if [ "$(cat "$jobdir/state")" = "cancelled" ]; then exit 0; fi
    write_status running
    exec 9>&-
    # The render runs in the pod's warm Blender (render_client.py starts it when none runs), which
    # outlives the job: the next one skips Blender's start-up. Killing the client ends that Blender too.
    cmd=(python3 "$here/render_client.py" "$jobdir/job.json")
    limit="$(cat "$jobdir/time_limit" 2>/dev/null || true)"
    # --foreground: timeout stays in the job's process group, so a cancel (kill -- -PGID) reaches the render too.
    if [ -n "$limit" ]; then cmd=(timeout --foreground --signal=TERM --kill-after=10 "$limit" "${cmd[@]}"); fi
    set +e
    started=$SECONDS
    ( cd "$jobdir" && exec "${cmd[@]}" ) >"$jobdir/render.log" 2>&1
    code=$?
    set -e
    forget_secrets
    if [ "$(cat "$jobdir/state")" = "cancelled" ]; then exit 0; fi
    if [ $code -eq 0 ]; then
        write_status done 0
    elif [ -n "$limit" ] && { [ $code -eq 124 ] || [ $code -eq 137 ]; } && [ $((SECONDS - started)) -ge "${limit%.*}" ]; then
        write_status failed "$code" "time limit: the job ran past its ${limit}s limit and was stopped"
    else
        error="$(grep '^render_job: ' "$jobdir/render.log" 2>/dev/null | tail -n 1 | sed 's/^render_job: //' || true)"
        error="${error:-render job exited with $code; see render.log}"
        if disk_full; then error="pod disk full: $error"; fi
        write_status failed "$code" "$error"
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
        forget_secrets
        pid="$(cat "$jobdir/pid" 2>/dev/null || echo 0)"
        # only a plain number above 1 (and below pid_max): never -1 (every process) or init's group
        case "$pid" in
        '' | *[!0-9]*) pid=0 ;;
        esac
        if [ "${#pid}" -le 9 ] && [ "$((10#$pid))" -gt 1 ]; then
            kill -TERM -- "-$((10#$pid))" 2>/dev/null || true
        else
            echo "pod_agent: not signalling: the pid file holds no job's pid" >&2
        fi
    fi
    print_status
    ;;
esac
