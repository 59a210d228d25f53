#!/usr/bin/env bash
# Write-path benchmark (`make bench-write`): bin/strata-loadgen pushes fresh samples of realistic series at
#   rf1: `strata all` (one process, replication factor 1), and
#   rf3: the local cluster of examples/local-cluster (3 ingesters in 3 zones + 1 distributor, replication factor 3),
# and this script reports, per setup: acknowledged samples/s; server CPU-seconds per million acknowledged samples
# (utime+stime of the Strata processes from /proc, the load tool excluded; 1 CPU-s per 1M samples = 1 µs/sample);
# ingester RSS per active series per replica; and the load tool's own CPU.
#
# Usage: scripts/bench-write.sh [--duration 60s] [--series 100000] [rf1|rf3|both]    (default: both)
# Environment: BENCH_DURATION, BENCH_SERIES, BENCH_LABELS (15), BENCH_SERIES_PER_REQUEST (2000),
#   BENCH_CONCURRENCY (4), BENCH_PROTOCOL (v1|v2), BENCH_MAX_FAILURES (stop a run after that many failed requests;
#   default 1000), BENCH_KEEP=1 (keep the data directories and logs), STRATA_PORT_OFFSET (shifts the local
#   cluster's ports, see examples/local-cluster/start.sh).
# Everything listens on 127.0.0.1. The tenant's limits are raised (no ingestion rate or series limit) so that the
# figures measure the write path, not the limiter.
set -euo pipefail

DURATION=${BENCH_DURATION:-60s}
SERIES=${BENCH_SERIES:-100000}
LABELS=${BENCH_LABELS:-15}
PER_REQUEST=${BENCH_SERIES_PER_REQUEST:-2000}
CONCURRENCY=${BENCH_CONCURRENCY:-4}
PROTOCOL=${BENCH_PROTOCOL:-v1}
MAX_FAILURES=${BENCH_MAX_FAILURES:-1000}
TENANT=bench
SETUPS=both

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --series) SERIES=${2:?--series needs a value}; shift 2 ;;
    --series=*) SERIES=${1#*=}; shift ;;
    rf1 | rf3 | both) SETUPS=$1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$SETUPS" in both) SETUPS="rf1 rf3" ;; esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CLUSTER_SCRIPTS=examples/local-cluster
TICKS=$(getconf CLK_TCK 2>/dev/null || echo 100)
OFF=${STRATA_PORT_OFFSET:-0}
RF1_HTTP=18080
RF1_GRPC=19095

TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-write.XXXXXX")
RF1_PID=
RF3_DIR=
LOADGEN_PID=
ROWS=()
FAILED_REQUESTS=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$LOADGEN_PID" ]]; then kill -TERM "$LOADGEN_PID" 2>/dev/null || true; wait "$LOADGEN_PID" 2>/dev/null || true; fi
  if [[ -n "$RF1_PID" ]]; then stop_pid "$RF1_PID" "strata all" || true; fi
  if [[ -n "$RF3_DIR" ]]; then bash "$CLUSTER_SCRIPTS/stop.sh" "$RF3_DIR" >/dev/null 2>&1 || true; fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

log() { echo "bench-write: $*" >&2; }

# alive PID: the process exists and is not a zombie.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ ! -r /proc/$1/stat ]] || [[ $(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat") != Z ]]
}

# stop_pid PID NAME: SIGTERM, then wait (at most 120s: ingesters flush their heads on the way out), then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 600; i++)); do
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.2
  done
  log "$name (pid $pid) did not stop within 120s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cpu_ticks PID: utime+stime (fields 14 and 15 of /proc/PID/stat), in clock ticks. The fields are counted after
# the command name, which may hold spaces.
cpu_ticks() {
  local stat rest f
  stat=$(<"/proc/$1/stat")
  rest=${stat##*) }
  read -r -a f <<<"$rest" # f[0] is field 3 (state)
  echo $((f[11] + f[12]))
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# http_port PID: the port of the process's --http-address flag.
http_port() { tr '\0' '\n' <"/proc/$1/cmdline" | sed -n 's/^--http-address=.*:\([0-9]*\)$/\1/p' | tail -n 1; }

# active_series PORT: prints "<count> <metric>": strata_ingester_active_series summed over tenants, or, if the
# process does not export it, prometheus_tsdb_head_series summed. Prints "0 none" if neither is there.
active_series() {
  curl -sf --max-time 10 "http://127.0.0.1:$1/metrics" | awk '
    /^strata_ingester_active_series[{ ]/ { a += $NF; fa = 1 }
    /^prometheus_tsdb_head_series[{ ]/ { h += $NF; fh = 1 }
    END {
      if (fa) printf "%d strata_ingester_active_series\n", a
      else if (fh) printf "%d prometheus_tsdb_head_series\n", h
      else print "0 none"
    }' || echo "0 none"
}

# json_num KEY FILE: the number after "KEY": in the load tool's indented JSON (one key per line).
json_num() { sed -n "s/^ *\"$1\": \(-\{0,1\}[0-9.eE+-]*\),\{0,1\}\$/\1/p" "$2" | head -n 1; }

# wait_ready PORT PID NAME: until /ready answers 200, at most 60s, and only while PID lives.
wait_ready() {
  local port=$1 pid=$2 name=$3 i
  for ((i = 0; i < 120; i++)); do
    if curl -sf --max-time 2 "http://127.0.0.1:$port/ready" >/dev/null; then return 0; fi
    alive "$pid" || { log "$name exited while starting"; return 1; }
    sleep 0.5
  done
  log "$name not ready after 60s"
  return 1
}

# bench_config: limits out of the benchmark's way (the rest are the defaults).
cat >"$TMP/bench.yaml" <<'YAML'
limits:
  ingestion_rate: .inf
  ingestion_burst_size: 100000000
  max_global_series_per_user: 0
  max_global_series_per_metric: 0
YAML

# run_load SETUP URL PIDS...: runs the load tool, measuring the PIDs' CPU around it; appends a row to ROWS.
# INGESTER_PIDS must name the processes whose RSS and active series count.
run_load() {
  local setup=$1 url=$2; shift 2
  local pids=("$@") pid before=0 after=0 rc=0 out="$TMP/$setup.json"
  for pid in "${pids[@]}"; do before=$((before + $(cpu_ticks "$pid"))); done
  log "$setup: pushing $SERIES series × $LABELS labels ($PROTOCOL, $PER_REQUEST per request, $CONCURRENCY in flight) for $DURATION to $url"
  # In the background and waited for, so that a signal to this script is handled at once (the trap stops it).
  bin/strata-loadgen --url "$url" --tenant "$TENANT" --series "$SERIES" --labels-per-series "$LABELS" \
    --series-per-request "$PER_REQUEST" --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --protocol "$PROTOCOL" --max-failures "$MAX_FAILURES" --json >"$out" 2>"$TMP/$setup.loadgen.log" &
  LOADGEN_PID=$!
  wait "$LOADGEN_PID" || rc=$?
  LOADGEN_PID=
  for pid in "${pids[@]}"; do
    alive "$pid" || { log "$setup: Strata process $pid died during the run"; cat "$TMP/$setup.loadgen.log" >&2; return 1; }
    after=$((after + $(cpu_ticks "$pid")))
  done
  sed "s/^/  /" "$TMP/$setup.loadgen.log" >&2
  if [[ ! -s "$out" ]]; then log "$setup: the load tool failed (exit $rc)"; return 1; fi

  local acked failed lg_cpu rate rss=0 series=0 metric= line port n m
  acked=$(json_num samples_acked "$out")
  rate=$(json_num acked_samples_per_second "$out")
  lg_cpu=$(json_num loadgen_cpu_seconds "$out")
  failed=$(json_num requests_failed_total "$out")
  for pid in "${INGESTER_PIDS[@]}"; do
    rss=$((rss + $(rss_kb "$pid")))
    port=$(http_port "$pid")
    line=$(active_series "$port")
    n=${line%% *} m=${line#* }
    series=$((series + n))
    metric=$m
  done
  if ((failed > 0)); then
    log "$setup: $failed requests FAILED (see the load tool's line above): its figures are not valid"
    FAILED_REQUESTS=$((FAILED_REQUESTS + failed))
  fi
  if ((acked == 0)); then
    log "$setup: no sample was acknowledged: no figures"
    ROWS+=("$(printf '%-4s %12s %14s %10s %10s %16s %10s %8.1f %8d' "$setup" 0 - - - - - "$lg_cpu" "$failed")")
    return 0
  fi
  log "$setup: active series from $metric"
  # cpu s per 1M samples = Δcpu / (acked / 1e6), which is also µs per sample.
  ROWS+=("$(awk -v s="$setup" -v r="$rate" -v d=$((after - before)) -v t="$TICKS" -v a="$acked" -v rss="$rss" \
    -v n="$series" -v lg="$lg_cpu" -v f="$failed" 'BEGIN {
      cpu = d / t
      printf "%-4s %12.0f %14.3f %10.1f %10.1f %16d %10.3f %8.1f %8d\n", s, r, cpu / (a / 1e6), cpu, rss / 1024, n,
        (n > 0 ? rss / n : 0), lg, f }')")
}

bench_rf1() {
  port_free "$RF1_HTTP" && port_free "$RF1_GRPC" || {
    log "rf1: 127.0.0.1:$RF1_HTTP or :$RF1_GRPC is in use; not benchmarking someone else's server"
    return 1
  }
  log "rf1: starting strata all (data in $TMP/rf1, log in $TMP/rf1.log)"
  bin/strata all --config.file="$TMP/bench.yaml" --http-address="127.0.0.1:$RF1_HTTP" \
    --grpc-address="127.0.0.1:$RF1_GRPC" --data-dir="$TMP/rf1" >"$TMP/rf1.log" 2>&1 &
  RF1_PID=$!
  wait_ready "$RF1_HTTP" "$RF1_PID" "strata all" || { tail -20 "$TMP/rf1.log" >&2; return 1; }
  INGESTER_PIDS=("$RF1_PID")
  local rc=0
  run_load rf1 "http://127.0.0.1:$RF1_HTTP/api/v1/push" "$RF1_PID" || rc=1
  log "rf1: stopping strata all"
  stop_pid "$RF1_PID" "strata all"
  RF1_PID=
  return "$rc"
}

bench_rf3() {
  if [[ ! -f "$CLUSTER_SCRIPTS/start.sh" ]]; then
    log "rf3: $CLUSTER_SCRIPTS/start.sh does not exist (yet): skipping the RF 3 cluster"
    ROWS+=("$(printf '%-4s %s' rf3 "skipped: no $CLUSTER_SCRIPTS/start.sh")")
    return 0
  fi
  local p
  for p in 8080 8081 8082 8083 9095 9096 9097 9098; do
    port_free $((p + OFF)) || {
      log "rf3: 127.0.0.1:$((p + OFF)) is in use; set STRATA_PORT_OFFSET to use other ports"
      return 1
    }
  done
  # start.sh runs $STRATA_BIN; this wrapper adds the benchmark's limits and execs, so the PID start.sh records
  # is the strata process itself.
  cat >"$TMP/strata-bench" <<SH
#!/usr/bin/env bash
exec "$ROOT/bin/strata" "\$@" --config.file="$TMP/bench.yaml"
SH
  chmod +x "$TMP/strata-bench"
  RF3_DIR="$TMP/rf3"
  log "rf3: starting the local cluster (state and logs in $RF3_DIR)"
  STRATA_BIN="$TMP/strata-bench" bash "$CLUSTER_SCRIPTS/start.sh" "$RF3_DIR" >"$TMP/rf3.start.log" 2>&1 || {
    cat "$TMP/rf3.start.log" >&2
    log "rf3: the local cluster did not start"
    return 1
  }
  local pids=() ing=() f
  for f in "$RF3_DIR"/*.pid; do
    pids+=("$(<"$f")")
    [[ $(basename "$f") == ingester* ]] && ing+=("$(<"$f")")
  done
  if ((${#ing[@]} == 0)); then log "rf3: no ingester PID in $RF3_DIR"; return 1; fi
  INGESTER_PIDS=("${ing[@]}")
  local rc=0
  run_load rf3 "http://127.0.0.1:$((8080 + OFF))/api/v1/push" "${pids[@]}" || rc=1
  log "rf3: stopping the local cluster"
  bash "$CLUSTER_SCRIPTS/stop.sh" "$RF3_DIR" >&2 || rc=1
  RF3_DIR=
  return "$rc"
}

log "building bin/strata and bin/strata-loadgen"
go build -o bin/strata ./cmd/strata
go build -o bin/strata-loadgen ./cmd/strata-loadgen

status=0
for s in $SETUPS; do
  "bench_$s" || { status=1; ROWS+=("$(printf '%-4s %s' "$s" "FAILED (see above)")"); }
done

echo
echo "Write benchmark: $SERIES series × $LABELS labels, $PROTOCOL, $PER_REQUEST series/request, $CONCURRENCY in flight, $DURATION;" \
  "$(nproc) CPUs ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -n 1)); $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf '%-4s %12s %14s %10s %10s %16s %10s %8s %8s\n' setup "samples/s" "CPU-s/1M(=µs)" "server-CPU" "RSS-MB" \
  "active-series" "KB/series" "lg-CPU" "failed"
for r in "${ROWS[@]}"; do echo "$r"; done
cat <<'EOF'
samples/s: acknowledged (2xx) samples per second. CPU-s/1M: utime+stime of the Strata processes (rf3: the
distributor and the 3 ingesters) during the run, per million acknowledged samples (= µs per sample). RSS-MB,
active-series, KB/series: the ingesters after the run (rf1: the whole `strata all` process); active series are summed
over the ingesters, so KB/series is RSS per active series per replica. lg-CPU: the load tool's own CPU seconds.
failed: failed requests.
EOF
if ((FAILED_REQUESTS > 0)); then
  echo "NOT VALID: $FAILED_REQUESTS requests failed; a row with failures does not measure the write path." >&2
  status=1
fi
exit "$status"
