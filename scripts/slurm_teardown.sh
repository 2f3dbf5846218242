#!/usr/bin/env bash
# Stop the daemons scripts/slurm_setup.sh started, newest first, by the PIDs it recorded in
# $BENCH_SLURM_DIR/pids. Nothing else is touched: jobs still in the queue are reported, not
# cancelled (cancel your own with scancel first), and daemons that were already running before
# the setup (e.g. a system munged) are not in the list, so they keep running.
set -uo pipefail

DIR=${BENCH_SLURM_DIR:-/tmp/bench-slurm}
[ -s "$DIR/pids" ] || { echo "slurm_teardown.sh: nothing recorded in $DIR/pids"; exit 0; }

left=$(squeue -h 2>/dev/null | wc -l)
[ "$left" -gt 0 ] && echo "slurm_teardown.sh: warning: $left job(s) still queued" >&2

stop() {  # stop NAME PID: SIGTERM, wait up to 10 s, then SIGKILL
  local name=$1 pid=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid"
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  echo "slurm_teardown.sh: $name ($pid) ignored SIGTERM; killing it" >&2
  kill -9 "$pid" 2>/dev/null || true
}

tac "$DIR/pids" | while read -r name pid; do stop "$name" "$pid"; done
: > "$DIR/pids"
echo "slurm_teardown.sh: stopped"
