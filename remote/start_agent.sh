#!/usr/bin/env bash
# Start the queue agent in the background with a pidfile and a log.
#   remote/start_agent.sh [--hosts FILE] [--queue-dir DIR]    start (no-op if running)
#   remote/start_agent.sh stop [--queue-dir DIR]              stop it
# DIR defaults to $POSEFACTORY_DATA_DIR/queue (or ~/.local/share/posefactory/queue).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${POSEFACTORY_PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python=python3

action=start
if [ "${1:-}" = "stop" ] || [ "${1:-}" = "status" ]; then action="$1"; shift; fi
hosts=()
queue_dir="${POSEFACTORY_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/posefactory}/queue"
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) hosts=(--hosts "$2"); shift 2 ;;
        --queue-dir) queue_dir="$2"; shift 2 ;;
        *) echo "start_agent.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$queue_dir"
pidfile="$queue_dir/agent.pid"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$action" in
    status)
        if running; then echo "agent running (pid $(cat "$pidfile"))"; else echo "agent not running"; exit 1; fi ;;
    stop)
        if running; then kill "$(cat "$pidfile")"; echo "agent stopped"; else echo "agent not running"; fi
        rm -f "$pidfile" ;;
    start)
        if running; then echo "agent already running (pid $(cat "$pidfile"))"; exit 0; fi
        cd "$here"
        nohup "$python" -m remote.bridge.agent "${hosts[@]}" --queue-dir "$queue_dir" \
            --log-file "$queue_dir/agent.log" </dev/null >>"$queue_dir/agent.log" 2>&1 &
        echo $! > "$pidfile"
        echo "agent started (pid $!): queue $queue_dir, log $queue_dir/agent.log" ;;
esac
