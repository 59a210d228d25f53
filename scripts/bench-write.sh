#!/usr/bin/env bash
# Write-path benchmark (`make bench-write`): bin/strata-loadgen pushes fresh samples of realistic series at
#   rf1: `strata all` (one process, replication factor 1), and
#   rf3: the distributor and the 3 ingesters (zones a, b, c; replication factor 3) of examples/local-cluster, and
#        nothing else of that cluster,
# and this script reports, per run: acknowledged samples/s; server CPU (utime+stime from /proc, the load tool
# excluded) in µs per acknowledged sample, in total and (rf3) for the distributor alone; each ingester's CPU in µs
# per sample that ingester stored (the rise of its strata_ingester_ingested_samples_total); ingester RSS per active
# series per replica; and the load tool's own CPU. Each setup runs BENCH_RUNS times, with fresh processes and data
# directories each time; then the medians.
#
# Usage: scripts/bench-write.sh [--duration 60s] [--series 100000] [--runs 3] [--baseline REV] [rf1|rf3|both]
#   (default: both)
# Environment (the defaults are issue 17's load shape):
#   BENCH_DURATION (60s; 10m gives the 10-minute RSS of a memory soak), BENCH_SERIES (100000),
#   BENCH_LABELS (11: __name__ and 10 more), BENCH_SERIES_PER_REQUEST (2000), BENCH_CONCURRENCY (8 in flight),
#   BENCH_PROTOCOL (v1|v2), BENCH_MAX_FAILURES (stop a run after that many failed requests; default 1000),
#   BENCH_RUNS (3 runs of each setup, each version),
#   BENCH_BASELINE=REV: also benchmark the strata of commit REV (e.g. the commit before a change), built in a
#     temporary `git worktree` (removed at exit); the load tool is always this tree's. Runs are interleaved (base
#     run 1, current run 1, base run 2, ...) so that drift hits both; the end compares the medians (current/base).
#   BENCH_PPROF=DIR: in the first run of each version × setup, once a third of the duration has passed, a CPU
#     profile (BENCH_PPROF_SECONDS, default 20, shortened to end before the load does) and then a heap profile of
#     each Strata process, into DIR/<base|current>-<setup>-<all|distributor|ingester-a|...>.{cpu,heap}.pb.gz.
#   BENCH_KEEP=1 (keep the data directories and logs), BENCH_RF1_HTTP_PORT (18080), BENCH_RF1_GRPC_PORT (19095),
#   STRATA_PORT_OFFSET (shifts the local cluster's ports, see examples/local-cluster/start.sh).
# Everything listens on 127.0.0.1. The tenant's limits are raised (no ingestion rate or series limit) so that the
# figures measure the write path, not the limiter. The baseline runs under this tree's start.sh and limits file.
# shellcheck disable=SC2317 # the functions the traps call and bench_$s look unreachable to shellcheck.
set -euo pipefail

DURATION=${BENCH_DURATION:-60s}
SERIES=${BENCH_SERIES:-100000}
LABELS=${BENCH_LABELS:-11}
PER_REQUEST=${BENCH_SERIES_PER_REQUEST:-2000}
CONCURRENCY=${BENCH_CONCURRENCY:-8}
PROTOCOL=${BENCH_PROTOCOL:-v1}
MAX_FAILURES=${BENCH_MAX_FAILURES:-1000}
RUNS=${BENCH_RUNS:-3}
BASELINE=${BENCH_BASELINE:-}
PPROF_DIR=${BENCH_PPROF:-}
PPROF_SECONDS=${BENCH_PPROF_SECONDS:-20}
RF1_HTTP=${BENCH_RF1_HTTP_PORT:-18080}
RF1_GRPC=${BENCH_RF1_GRPC_PORT:-19095}
TENANT=bench
SETUPS=both

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while (($#)); do
  case "$1" in
    --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --series) SERIES=${2:?--series needs a value}; shift 2 ;;
    --series=*) SERIES=${1#*=}; shift ;;
    --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
    --runs=*) RUNS=${1#*=}; shift ;;
    --baseline) BASELINE=${2:?--baseline needs a value}; shift 2 ;;
    --baseline=*) BASELINE=${1#*=}; shift ;;
    rf1 | rf3 | both) SETUPS=$1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$SETUPS" in both) SETUPS="rf1 rf3" ;; esac
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_RUNS must be a positive integer, got '$RUNS'" >&2; exit 2; }
[[ $PPROF_SECONDS =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_PPROF_SECONDS must be a positive integer, got '$PPROF_SECONDS'" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CLUSTER_SCRIPTS=examples/local-cluster
TICKS=$(getconf CLK_TCK 2>/dev/null || echo 100)
OFF=${STRATA_PORT_OFFSET:-0}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-write.XXXXXX")
RESULTS="$TMP/results.tsv"
: >"$RESULTS"
RF1_PID=
RF3_DIR=
LOADGEN_PID=
CHILD_PID=
PPROF_PID=
BASE_WT=
FAILED_REQUESTS=0
# The Strata processes of the running setup: name, PID, HTTP port.
P_NAME=() P_PID=() P_PORT=()

log() { echo "bench-write: $*" >&2; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$PPROF_PID" ]]; then kill -TERM "$PPROF_PID" 2>/dev/null || true; fi
  if [[ -n "$CHILD_PID" ]]; then kill -TERM "$CHILD_PID" 2>/dev/null || true; wait "$CHILD_PID" 2>/dev/null || true; fi
  if [[ -n "$LOADGEN_PID" ]]; then kill -TERM "$LOADGEN_PID" 2>/dev/null || true; wait "$LOADGEN_PID" 2>/dev/null || true; fi
  if [[ -n "$RF1_PID" ]]; then stop_pid "$RF1_PID" "strata all" || true; fi
  if [[ -n "$RF3_DIR" ]]; then bash "$CLUSTER_SCRIPTS/stop.sh" "$RF3_DIR" >/dev/null 2>&1 || true; fi
  if [[ -n "$BASE_WT" ]]; then
    git -C "$ROOT" worktree remove --force "$BASE_WT" >/dev/null 2>&1 || { rm -rf "$BASE_WT"; git -C "$ROOT" worktree prune || true; }
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# in_bg CMD...: runs CMD in the background and waits for it, so that a signal to this script is handled at once
# (bash runs a trap only once the foreground command is done); the trap stops CMD.
in_bg() {
  local rc=0
  "$@" &
  CHILD_PID=$!
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=
  return "$rc"
}

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

# metrics PORT FILE: the process's /metrics into FILE (empty if it does not answer within 10s).
metrics() { curl -sf --max-time 10 "http://127.0.0.1:$1/metrics" >"$2" || : >"$2"; }

# active_series FILE: prints "<count> <metric>": strata_ingester_active_series summed over tenants, or, if the
# process does not export it, prometheus_tsdb_head_series summed. Prints "0 none" if neither is there.
active_series() {
  awk '
    /^strata_ingester_active_series[{ ]/ { a += $NF; fa = 1 }
    /^prometheus_tsdb_head_series[{ ]/ { h += $NF; fh = 1 }
    END {
      if (fa) printf "%d strata_ingester_active_series\n", a
      else if (fh) printf "%d prometheus_tsdb_head_series\n", h
      else print "0 none"
    }' "$1"
}

# stored_samples FILE: the samples the ingester appended (strata_ingester_ingested_samples_total summed over
# tenants; strata_ingester_appended_samples_total is taken too, should it be renamed so), or "-" if neither is there.
stored_samples() {
  awk '/^strata_ingester_(ingested|appended)_samples_total[{ ]/ { s += $NF; f = 1 }
    END { if (f) printf "%.0f\n", s; else print "-" }' "$1"
}

# json_num KEY FILE: the number after "KEY": in the load tool's indented JSON (one key per line).
json_num() { sed -n "s/^ *\"$1\": \(-\{0,1\}[0-9.eE+-]*\),\{0,1\}\$/\1/p" "$2" | head -n 1; }

# seconds DURATION: a Go duration (1h2m3.5s, 90s, 10m, 500ms) in seconds; fails on anything else.
seconds() {
  awk -v d="$1" 'BEGIN {
    s = d; t = 0
    if (s == "") exit 1
    while (s != "") {
      if (!match(s, /^[0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h)/)) exit 1
      tok = substr(s, 1, RLENGTH); s = substr(s, RLENGTH + 1)
      match(tok, /^[0-9]+(\.[0-9]*)?/); n = substr(tok, 1, RLENGTH) + 0; u = substr(tok, RLENGTH + 1)
      if (u == "h") t += n * 3600; else if (u == "m") t += n * 60; else if (u == "s") t += n
      else if (u == "ms") t += n / 1e3; else if (u == "ns") t += n / 1e9; else t += n / 1e6
    }
    printf "%.3f\n", t
  }'
}

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

DURATION_S=$(seconds "$DURATION") || { echo "BENCH_DURATION: not a duration: '$DURATION'" >&2; exit 2; }

# bench_config: limits out of the benchmark's way (the rest are the defaults).
cat >"$TMP/bench.yaml" <<'YAML'
limits:
  ingestion_rate: .inf
  ingestion_burst_size: 100000000
  max_global_series_per_user: 0
  max_global_series_per_metric: 0
YAML

# The versions benchmarked, and their strata binaries.
VERSIONS=(current)
declare -A BIN=([current]="$ROOT/bin/strata")
declare -A LABEL
LABEL[current]=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
if ! git diff --quiet HEAD 2>/dev/null; then LABEL[current]+="+changes"; fi

# pprof_job VERSION SETUP: in the background, a third into the load, a CPU profile and then a heap profile of each
# process of P_NAME/P_PORT into PPROF_DIR; sets PPROF_PID. The profiles of the processes are taken at once, so
# that they cover the same stretch of the load.
pprof_job() {
  local version=$1 setup=$2 delay secs
  delay=$(awk -v d="$DURATION_S" 'BEGIN { printf "%.1f", d / 3 }')
  # Shortened to end a second before the load does: a profile of an idle server says nothing of the write path.
  secs=$(awk -v d="$DURATION_S" -v w="$PPROF_SECONDS" 'BEGIN { r = int(d - d / 3 - 1); if (r > w) r = w; if (r < 1) r = 1; print r }')
  ((secs == PPROF_SECONDS)) || log "$version $setup: CPU profiles of ${secs}s (the load ends before ${PPROF_SECONDS}s would)"
  local names=("${P_NAME[@]}") ports=("${P_PORT[@]}")
  (
    profile() { # KIND URL-PATH FILE
      curl -sf --max-time $((secs + 30)) -o "$3" "$2" || { log "$1 profile $2 failed"; rm -f "$3"; }
    }
    sleep "$delay"
    pids=()
    for i in "${!names[@]}"; do
      profile cpu "http://127.0.0.1:${ports[i]}/debug/pprof/profile?seconds=$secs" \
        "$PPROF_DIR/$version-$setup-${names[i]}.cpu.pb.gz" &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    pids=()
    for i in "${!names[@]}"; do
      profile heap "http://127.0.0.1:${ports[i]}/debug/pprof/heap" "$PPROF_DIR/$version-$setup-${names[i]}.heap.pb.gz" &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
  ) &
  PPROF_PID=$!
}

# stop_pprof: kills the profiling job (a run that failed).
stop_pprof() {
  [[ -n "$PPROF_PID" ]] || return 0
  kill -TERM "$PPROF_PID" 2>/dev/null || true
  wait "$PPROF_PID" 2>/dev/null || true
  PPROF_PID=
}

# record VERSION SETUP RUN FIELDS...: a line of RESULTS: version setup run samples/s µs-total µs-distributor
# µs-ingester-a µs-ingester-b µs-ingester-c RSS-MB active-series KB/series lg-CPU failed status ("-": none).
record() { local IFS=$'\t'; echo "$*" >>"$RESULTS"; }

# run_load VERSION SETUP RUN URL: runs the load tool against the processes of P_NAME/P_PID/P_PORT, measuring their
# CPU, and records the run. Processes named all or ingester-* hold the data (RSS, active series, stored samples).
run_load() {
  local version=$1 setup=$2 run=$3 url=$4
  local out="$TMP/$version-$setup-$run.json" lglog="$TMP/$version-$setup-$run.loadgen.log" i rc=0
  local cpu0=() cpu1=() st0=() st1=()
  for i in "${!P_PID[@]}"; do
    cpu0[i]=$(cpu_ticks "${P_PID[i]}")
    metrics "${P_PORT[i]}" "$TMP/m"
    st0[i]=$(stored_samples "$TMP/m")
  done
  if [[ -n "$PPROF_DIR" && $run == 1 ]]; then pprof_job "$version" "$setup"; fi
  log "$version $setup run $run/$RUNS: pushing $SERIES series × $LABELS labels ($PROTOCOL, $PER_REQUEST per request, $CONCURRENCY in flight) for $DURATION to $url"
  # In the background and waited for, so that a signal to this script is handled at once (the trap stops it).
  bin/strata-loadgen --url "$url" --tenant "$TENANT" --series "$SERIES" --labels-per-series "$LABELS" \
    --series-per-request "$PER_REQUEST" --concurrency "$CONCURRENCY" --duration "$DURATION" \
    --protocol "$PROTOCOL" --max-failures "$MAX_FAILURES" --json >"$out" 2>"$lglog" &
  LOADGEN_PID=$!
  wait "$LOADGEN_PID" || rc=$?
  LOADGEN_PID=
  for i in "${!P_PID[@]}"; do
    if ! alive "${P_PID[i]}"; then
      log "$version $setup: ${P_NAME[i]} (pid ${P_PID[i]}) died during the run"
      cat "$lglog" >&2
      stop_pprof
      return 1
    fi
    cpu1[i]=$(cpu_ticks "${P_PID[i]}")
  done
  # RSS and series right after the load (before the profiling job's end, which may be a little later).
  local rss=0 series=0 metric=none line
  for i in "${!P_PID[@]}"; do
    metrics "${P_PORT[i]}" "$TMP/m"
    st1[i]=$(stored_samples "$TMP/m")
    [[ ${P_NAME[i]} == all || ${P_NAME[i]} == ingester-* ]] || continue
    rss=$((rss + $(rss_kb "${P_PID[i]}")))
    line=$(active_series "$TMP/m")
    series=$((series + ${line%% *}))
    metric=${line#* }
  done
  sed "s/^/  /" "$lglog" >&2
  if [[ ! -s "$out" ]]; then log "$version $setup: the load tool failed (exit $rc)"; stop_pprof; return 1; fi
  if [[ -n "$PPROF_PID" ]]; then
    log "$version $setup: waiting for the profiles"
    wait "$PPROF_PID" || true
    PPROF_PID=
  fi

  local acked failed lg_cpu rate
  acked=$(json_num samples_acked "$out")
  rate=$(json_num acked_samples_per_second "$out")
  lg_cpu=$(json_num loadgen_cpu_seconds "$out")
  failed=$(json_num requests_failed_total "$out")
  if ((failed > 0)); then
    log "$version $setup: $failed requests FAILED (see the load tool's line above): its figures are not valid"
    FAILED_REQUESTS=$((FAILED_REQUESTS + failed))
  fi
  if ((acked == 0)); then
    log "$version $setup: no sample was acknowledged: no figures"
    record "$version" "$setup" "$run" 0 - - - - - - - - "$lg_cpu" "$failed" no-samples
    return 0
  fi
  log "$version $setup: active series from $metric"

  # µs per sample = Δcpu-seconds / samples × 1e6 (= CPU-seconds per million samples).
  local total=0 dist=- ing=(- - -) d n
  for i in "${!P_PID[@]}"; do
    d=$((cpu1[i] - cpu0[i]))
    total=$((total + d))
    case ${P_NAME[i]} in
      distributor) dist=$(awk -v d="$d" -v t="$TICKS" -v a="$acked" 'BEGIN { printf "%.3f", d / t / a * 1e6 }') ;;
      ingester-[abc])
        case ${P_NAME[i]} in ingester-a) n=0 ;; ingester-b) n=1 ;; ingester-c) n=2 ;; esac
        # Before the first sample of the tenant, its series of the counter does not exist yet: 0.
        [[ ${st0[i]} != - ]] || st0[i]=0
        if [[ ${st1[i]} == - ]] || ((st1[i] - st0[i] <= 0)); then
          log "$version $setup: ${P_NAME[i]} stored no sample (strata_ingester_ingested_samples_total): no µs per stored sample"
        else
          ing[n]=$(awk -v d="$d" -v t="$TICKS" -v s=$((st1[i] - st0[i])) 'BEGIN { printf "%.3f", d / t / s * 1e6 }')
        fi
        ;;
    esac
  done
  record "$version" "$setup" "$run" "$(awk -v r="$rate" 'BEGIN { printf "%.0f", r }')" \
    "$(awk -v d="$total" -v t="$TICKS" -v a="$acked" 'BEGIN { printf "%.3f", d / t / a * 1e6 }')" \
    "$dist" "${ing[@]}" "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$series" \
    "$(awk -v k="$rss" -v n="$series" 'BEGIN { if (n > 0) printf "%.3f", k / n; else print "-" }')" \
    "$lg_cpu" "$failed" ok
}

# bench_rf1 VERSION RUN
bench_rf1() {
  local version=$1 run=$2 dir="$TMP/$1-rf1-$2"
  if ! port_free "$RF1_HTTP" || ! port_free "$RF1_GRPC"; then
    log "rf1: 127.0.0.1:$RF1_HTTP or :$RF1_GRPC is in use (BENCH_RF1_HTTP_PORT, BENCH_RF1_GRPC_PORT); not benchmarking someone else's server"
    return 1
  fi
  mkdir -p "$dir"
  log "$version rf1 run $run/$RUNS: starting strata all (data and log in $dir)"
  "${BIN[$version]}" all --config.file="$TMP/bench.yaml" --http-address="127.0.0.1:$RF1_HTTP" \
    --grpc-address="127.0.0.1:$RF1_GRPC" --data-dir="$dir/data" >"$dir/strata.log" 2>&1 &
  RF1_PID=$!
  if ! wait_ready "$RF1_HTTP" "$RF1_PID" "strata all"; then
    tail -20 "$dir/strata.log" >&2
    stop_pid "$RF1_PID" "strata all"
    RF1_PID=
    return 1
  fi
  P_NAME=(all) P_PID=("$RF1_PID") P_PORT=("$RF1_HTTP")
  local rc=0
  run_load "$version" rf1 "$run" "http://127.0.0.1:$RF1_HTTP/api/v1/push" || rc=1
  log "$version rf1: stopping strata all"
  stop_pid "$RF1_PID" "strata all"
  RF1_PID=
  [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$dir/data"
  return "$rc"
}

# bench_rf3 VERSION RUN
bench_rf3() {
  local version=$1 run=$2 p
  for p in 8080 8081 8082 8083 9095 9096 9097 9098 7946 7947 7948 7949; do
    port_free $((p + OFF)) || {
      log "rf3: 127.0.0.1:$((p + OFF)) is in use; set STRATA_PORT_OFFSET to use other ports"
      return 1
    }
  done
  # start.sh runs $STRATA_BIN; this wrapper adds the benchmark's limits and execs, so the PID start.sh records
  # is the strata process itself.
  local wrapper="$TMP/strata-$version"
  cat >"$wrapper" <<SH
#!/usr/bin/env bash
exec "${BIN[$version]}" "\$@" --config.file="$TMP/bench.yaml"
SH
  chmod +x "$wrapper"
  RF3_DIR="$TMP/$version-rf3-$run"
  log "$version rf3 run $run/$RUNS: starting the distributor and 3 ingesters of the local cluster (state and logs in $RF3_DIR)"
  # Only these 4: the store-gateways, querier and query-frontend would only add noise to the CPU of the host.
  if ! in_bg env STRATA_BIN="$wrapper" bash "$CLUSTER_SCRIPTS/start.sh" "$RF3_DIR" ingester-a ingester-b ingester-c \
    distributor >"$RF3_DIR.start.log" 2>&1; then
    cat "$RF3_DIR.start.log" >&2
    log "rf3: the local cluster did not start"
    bash "$CLUSTER_SCRIPTS/stop.sh" "$RF3_DIR" >&2 || true
    RF3_DIR=
    return 1
  fi
  local c i=0
  P_NAME=() P_PID=() P_PORT=()
  for c in distributor ingester-a ingester-b ingester-c; do
    P_NAME+=("$c") P_PID+=("$(<"$RF3_DIR/$c.pid")") P_PORT+=($((8080 + i + OFF)))
    i=$((i + 1))
  done
  local rc=0
  run_load "$version" rf3 "$run" "http://127.0.0.1:$((8080 + OFF))/api/v1/push" || rc=1
  log "$version rf3: stopping the local cluster"
  bash "$CLUSTER_SCRIPTS/stop.sh" "$RF3_DIR" >&2 || rc=1
  [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$RF3_DIR"/ingester-* "$RF3_DIR"/distributor "$RF3_DIR/bucket"
  RF3_DIR=
  return "$rc"
}

log "building bin/strata and bin/strata-loadgen"
in_bg go build -o bin/strata ./cmd/strata
in_bg go build -o bin/strata-loadgen ./cmd/strata-loadgen
if [[ -n "$BASELINE" ]]; then
  BASE_REV=$(git rev-parse --verify --quiet "$BASELINE^{commit}") || { log "BENCH_BASELINE: no commit '$BASELINE'"; exit 2; }
  BASE_WT="$TMP/base/src"
  mkdir -p "$TMP/base"
  log "building the baseline's strata ($BASELINE = $(git rev-parse --short "$BASE_REV")) in a temporary worktree"
  git worktree add --detach "$BASE_WT" "$BASE_REV" >/dev/null 2>&1 || { log "git worktree add $BASE_WT $BASE_REV failed"; exit 1; }
  in_bg go -C "$BASE_WT" build -o "$TMP/base/strata" ./cmd/strata
  git worktree remove --force "$BASE_WT" >/dev/null 2>&1 || true
  BASE_WT=
  VERSIONS=(base current)
  BIN[base]="$TMP/base/strata"
  LABEL[base]=$(git rev-parse --short "$BASE_REV")
fi
if [[ -n "$PPROF_DIR" ]]; then mkdir -p "$PPROF_DIR"; PPROF_DIR=$(cd "$PPROF_DIR" && pwd); fi

status=0
for s in $SETUPS; do
  for ((r = 1; r <= RUNS; r++)); do
    for v in "${VERSIONS[@]}"; do
      "bench_$s" "$v" "$r" || { status=1; record "$v" "$s" "$r" - - - - - - - - - - - FAILED; }
    done
  done
done

# median VERSION SETUP COLUMN: the median of the column over the version's runs of the setup that gave figures.
median() {
  awk -F'\t' -v v="$1" -v s="$2" -v c="$3" '$1 == v && $2 == s && $15 == "ok" && $c != "-" { print $c }' "$RESULTS" |
    sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# fmt FORMAT VALUE: printf of a number, "-" as is.
fmt() { if [[ $2 == - ]]; then echo -; else awk -v f="$1" -v x="$2" 'BEGIN { printf f, x }'; fi; }
ROW='%-8s %-5s %-7s %10s %9s %9s %9s %9s %9s %8s %9s %9s %7s %7s\n'
# Widths count bytes (LC_ALL=C), and µ is 2 bytes in UTF-8: the µ headers' columns are one byte wider.
HDR='%-8s %-5s %-7s %10s %10s %10s %10s %10s %10s %8s %9s %9s %7s %7s\n'
export LC_ALL=C
FMTS=('' '' '' '%.0f' '%.3f' '%.3f' '%.3f' '%.3f' '%.3f' '%.1f' '%.0f' '%.3f' '%.1f' '%.0f')

echo
echo "Write benchmark: $SERIES series × $LABELS labels (__name__ included), $PROTOCOL, $PER_REQUEST series/request," \
  "$CONCURRENCY in flight, $DURATION; runs of each: $RUNS; $(nproc) CPUs ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -n 1))"
for v in "${VERSIONS[@]}"; do echo "  $v: strata of ${LABEL[$v]}"; done
# shellcheck disable=SC2059 # HDR is the format.
printf "$HDR" version setup run samples/s µs/sample dist-µs ing-a-µs ing-b-µs ing-c-µs RSS-MB series KB/series lg-CPU failed
for s in $SETUPS; do
  for v in "${VERSIONS[@]}"; do
    awk -F'\t' -v v="$v" -v s="$s" '$1 == v && $2 == s' "$RESULTS" | while IFS=$'\t' read -r -a f; do
      if [[ ${f[14]} == FAILED ]]; then printf '%-8s %-5s %-7s %s\n' "${f[0]}" "${f[1]}" "${f[2]}" "FAILED (see above)"; continue; fi
      for c in 3 4 5 6 7 8 9 10 11 12 13; do f[c]=$(fmt "${FMTS[c]}" "${f[c]}"); done
      # shellcheck disable=SC2059
      printf "$ROW" "${f[@]:0:14}"
    done
    m=("$v" "$s" MEDIAN)
    for c in 4 5 6 7 8 9 10 11 12 13; do m+=("$(fmt "${FMTS[c - 1]}" "$(median "$v" "$s" "$c")")"); done
    m+=("$(awk -F'\t' -v v="$v" -v s="$s" '$1 == v && $2 == s && $14 != "-" { n += $14 } END { print n + 0 }' "$RESULTS")")
    # shellcheck disable=SC2059
    printf "$ROW" "${m[@]}"
  done
done
cat <<'EOF'
samples/s: acknowledged (2xx) samples per second. µs/sample: CPU (utime+stime) of all the Strata processes of the
setup (rf1: `strata all`; rf3: the distributor and the 3 ingesters) during the load, in µs per acknowledged sample
(= CPU-seconds per million samples). dist-µs: the distributor's alone, per acknowledged sample. ing-X-µs: ingester
X's, per sample it stored (the rise of its strata_ingester_ingested_samples_total; each ingester stores every
sample once, so ≈ the acknowledged ones). RSS-MB, series, KB/series: the ingesters right after the load (rf1: the whole
`strata all` process); active series are summed over the ingesters, so KB/series is RSS in KB per active series per
replica. lg-CPU: the load tool's own CPU seconds. failed: failed requests (MEDIAN row: the sum). MEDIAN: over the
runs that gave figures.
EOF
if [[ -n "$PPROF_DIR" ]]; then echo "The first run of each version × setup was profiled (BENCH_PPROF), which costs it some CPU."; fi

if [[ -n "$BASELINE" ]]; then
  echo
  echo "Medians, current (${LABEL[current]}) / baseline (${LABEL[base]}):"
  printf '%-5s %10s %10s %12s  %s\n' setup base current current/base figure
  for s in $SETUPS; do
    # column:name
    figs=("4:samples/s" "5:µs/sample, server total")
    if [[ $s == rf3 ]]; then
      figs+=("6:µs/sample, distributor" "7:µs/stored sample, ingester-a" "8:µs/stored sample, ingester-b" "9:µs/stored sample, ingester-c")
    fi
    figs+=("12:KB/series/replica")
    for fg in "${figs[@]}"; do
      c=${fg%%:*}
      b=$(median base "$s" "$c") k=$(median current "$s" "$c")
      ratio=$(awk -v b="$b" -v k="$k" 'BEGIN { if (b == "-" || k == "-" || b + 0 == 0) print "-"; else printf "%.3f", k / b }')
      printf '%-5s %10s %10s %12s  %s\n' "$s" "$(fmt "${FMTS[c - 1]}" "$b")" "$(fmt "${FMTS[c - 1]}" "$k")" "$ratio" "${fg#*:}"
    done
  done
  echo "Below 1 is better for the µs and KB figures, above 1 for samples/s."
fi
if [[ -n "$PPROF_DIR" ]]; then echo "profiles: $PPROF_DIR (go tool pprof -top FILE)"; fi

if ((FAILED_REQUESTS > 0)); then
  echo "NOT VALID: $FAILED_REQUESTS requests failed; a row with failures does not measure the write path." >&2
  status=1
fi
exit "$status"
