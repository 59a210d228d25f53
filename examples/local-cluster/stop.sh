#!/usr/bin/env bash
# Stops the processes start.sh started under DIR, gracefully (SIGTERM: ingesters flush and ship their blocks).
# Usage: stop.sh DIR [component ...]
set -euo pipefail
DIR=${1:?usage: stop.sh DIR [component ...]}
shift || true
WANT=("$@")
[[ ${#WANT[@]} -eq 0 ]] && WANT=(query-frontend querier distributor ingester-a ingester-b ingester-c store-gateway-a store-gateway-b store-gateway-c)
# alive PID: the process exists and is not a zombie (a killed process whose parent is gone may stay one). A zombie
# whose other threads still run is alive: a Go process's main thread is a zombie before the last thread has exited
# and released the process's files, its listening sockets among them.
alive() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    [[ $(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat") != Z ]] && return 0
    local tasks=(/proc/"$pid"/task/*)
    [[ ${#tasks[@]} -gt 1 ]]
  fi
}
PIDS=()
for c in "${WANT[@]}"; do
  f="$DIR/$c.pid"
  [[ -f "$f" ]] || continue
  pid=$(cat "$f")
  if alive "$pid"; then kill -TERM "$pid"; PIDS+=("$pid:$c"); fi
  rm -f "$f"
done
deadline=$((SECONDS + 120))
for p in "${PIDS[@]}"; do
  pid=${p%%:*}
  while alive "$pid"; do
    if (( SECONDS > deadline )); then echo "${p##*:} (pid $pid) did not stop within 120s; killing it" >&2; kill -KILL "$pid"; fi
    sleep 0.2
  done
  echo "stopped ${p##*:}"
done
