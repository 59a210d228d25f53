#!/usr/bin/env bash
# Store-gateway benchmark at process level (`make bench`, after the Go benchmarks of pkg/query/gateway_bench_test.go):
# 1,000 small blocks (written by BenchmarkWriteGatewayBenchFixture: 10 series × 10 samples each, distinct time ranges) in
# a FILESYSTEM bucket under tenant team-a, served by `strata store-gateway`, against the real Prometheus binary of
# go.mod's version (`prometheus --storage.tsdb.path=<a copy of the same blocks>`), one after the other on this
# machine. For each it reports: time from process start to /ready (Prometheus: /-/ready) answering 200, VmRSS at
# ready, and VmRSS after a range query over every block — for Strata the query goes through a `strata querier`
# (--endpoint=<the gateway>), whose own memory is not counted; both answers are checked equal — and the ratios
# Strata / Prometheus.
#
# Usage: scripts/bench-gateway.sh
# Environment: BENCH_GATEWAY_RUNS (3: each process is started that many times, the median is reported),
#   BENCH_KEEP=1 (keep the data directories and logs), BENCH_PORT_BASE (19300: the ports used, 127.0.0.1 only).
# Prometheus does not compact the blocks (--storage.tsdb.min/max-block-duration=2h: one level, no compaction) and
# keeps them all (retention 100y), so both serve the same 1,000 blocks.
set -euo pipefail

RUNS=${BENCH_GATEWAY_RUNS:-3}
PORT=${BENCH_PORT_BASE:-19300}
SG_HTTP=$PORT SG_GRPC=$((PORT + 1)) SG_GOSSIP=$((PORT + 2))
Q_HTTP=$((PORT + 3)) Q_GRPC=$((PORT + 4)) Q_GOSSIP=$((PORT + 5))
PROM_HTTP=$((PORT + 6))
TENANT=team-a
QUERY='sum by (job) (count_over_time(small_metric[10m]))'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-gateway.XXXXXX")
PIDS=()

log() { echo "bench-gateway: $*" >&2; }

alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ ! -r /proc/$1/stat ]] || [[ $(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat") != Z ]]
}

stop_pid() {
  local pid=$1 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

now_ns() { date +%s%N; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $SG_HTTP $SG_GRPC $SG_GOSSIP $Q_HTTP $Q_GRPC $Q_GOSSIP $PROM_HTTP; do
  port_free "$p" || { log "port $p is in use (set BENCH_PORT_BASE)"; exit 1; }
done

# wait_ready URL PID NAME: polls URL every 10ms until it answers 200 (at most 120s, only while PID lives).
wait_ready() {
  local url=$1 pid=$2 name=$3 deadline=$(($(date +%s) + 120))
  while (($(date +%s) < deadline)); do
    alive "$pid" || { log "$name exited"; return 1; }
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true) == 200 ]]; then return 0; fi
    sleep 0.01
  done
  log "$name not ready after 120s"
  return 1
}

# query_range PORT [HEADER]: the query over the whole fixture, as JSON.
query_range() {
  local port=$1
  shift
  curl -sf --max-time 120 "$@" "http://127.0.0.1:$port/api/v1/query_range" \
    --data-urlencode "query=$QUERY" --data-urlencode "start=$START" --data-urlencode "end=$END" --data-urlencode "step=600"
}

# summary JSON: "<series> series, <points> points, sum <sum of values>" of a query_range answer (fails unless success).
summary() { jq -er 'select(.status == "success") | .data.result | "\(length) series, \([.[].values | length] | add) points, sum \([.[].values[][1] | tonumber] | add)"'; }

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

log "building strata and prometheus (go.mod's version)"
mkdir -p "$TMP/bin"
go build -o "$TMP/bin/strata" ./cmd/strata
go build -o "$TMP/bin/prometheus" github.com/prometheus/prometheus/cmd/prometheus

log "writing 1,000 small blocks"
t0=$(now_ns)
STRATA_GATEWAY_BENCH_FIXTURE_DIR="$TMP/fixture" go test -count=1 -run '^$' -bench '^BenchmarkWriteGatewayBenchFixture$' -benchtime 1x ./pkg/query/ >"$TMP/fixture.log" 2>&1 ||
  { cat "$TMP/fixture.log" >&2; exit 1; }
nblocks=$(find "$TMP/fixture/bucket/$TENANT" -name meta.json | wc -l)
log "$nblocks blocks written in $((($(now_ns) - t0) / 1000000))ms"
((nblocks == 1000)) || { log "expected 1000 blocks"; exit 1; }
# The query's range: the fixture's samples (every block's [minTime, maxTime)).
read -r START END < <(cat "$TMP"/fixture/prometheus/*/meta.json | jq -rs '"\((map(.minTime) | min) / 1000) \(((map(.maxTime) | max) - 1) / 1000)"')

cat >"$TMP/objstore.yml" <<EOF
type: FILESYSTEM
config:
  directory: $TMP/fixture/bucket
EOF
printf 'global:\n  scrape_interval: 1m\nscrape_configs: []\n' >"$TMP/prometheus.yml"

# A querier over the gateway only (its own bucket is empty; the fixture is older than the ingesters' window).
mkdir -p "$TMP/querier"
"$TMP/bin/strata" querier --data-dir="$TMP/querier" --auth.multitenancy-enabled \
  --http-address="127.0.0.1:$Q_HTTP" --grpc-address="127.0.0.1:$Q_GRPC" \
  --memberlist.bind-addr=127.0.0.1 --memberlist.bind-port="$Q_GOSSIP" \
  --endpoint="127.0.0.1:$SG_GRPC" --log.level=warn >"$TMP/querier.log" 2>&1 &
QPID=$!
PIDS+=("$QPID")
wait_ready "http://127.0.0.1:$Q_HTTP/ready" "$QPID" "strata querier" || { tail -20 "$TMP/querier.log" >&2; exit 1; }

declare -A READY_MS READY_RSS QUERY_RSS QUERY_MS
STRATA_ANSWER= PROM_ANSWER=

# run_strata I: one store-gateway start, from an empty data directory (no index-headers).
run_strata() {
  local i=$1 dir="$TMP/sg-$1" pid t0 t1 t2
  mkdir -p "$dir"
  t0=$(now_ns)
  "$TMP/bin/strata" store-gateway --data-dir="$dir" --auth.multitenancy-enabled \
    --objstore.config-file="$TMP/objstore.yml" \
    --http-address="127.0.0.1:$SG_HTTP" --grpc-address="127.0.0.1:$SG_GRPC" \
    --memberlist.bind-addr=127.0.0.1 --memberlist.bind-port="$SG_GOSSIP" \
    --store-gateway.instance-addr="127.0.0.1:$SG_GRPC" --log.level=warn >"$dir.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "http://127.0.0.1:$SG_HTTP/ready" "$pid" "strata store-gateway" || { tail -20 "$dir.log" >&2; exit 1; }
  t1=$(now_ns)
  READY_MS[strata.$i]=$(((t1 - t0) / 1000000))
  READY_RSS[strata.$i]=$(rss_kb "$pid")
  # The querier learns the gateway's Info (its blocks' labels and time range) periodically: retry until the answer
  # covers the data.
  local answer= tries
  for ((tries = 0; tries < 100; tries++)); do
    t1=$(now_ns)
    answer=$(query_range "$Q_HTTP" -H "X-Scope-OrgID: $TENANT" | summary 2>/dev/null || true)
    t2=$(now_ns)
    [[ -n "$answer" && "$answer" != 0\ series* ]] && break
    sleep 0.2
  done
  [[ -n "$answer" ]] || { log "strata query failed"; tail -20 "$dir.log" "$TMP/querier.log" >&2; exit 1; }
  ((tries == 0)) || log "strata: the query was retried $tries times (the querier had not seen the gateway yet): the time is not of the first query"
  QUERY_MS[strata.$i]=$(((t2 - t1) / 1000000))
  QUERY_RSS[strata.$i]=$(rss_kb "$pid")
  STRATA_ANSWER=$answer
  stop_pid "$pid"
}

# run_prometheus I: one Prometheus start over a fresh copy of the blocks.
run_prometheus() {
  local i=$1 dir="$TMP/prom-$1" pid t0 t1 t2
  cp -r "$TMP/fixture/prometheus" "$dir"
  sync
  t0=$(now_ns)
  "$TMP/bin/prometheus" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$dir" \
    --storage.tsdb.retention.time=100y --storage.tsdb.min-block-duration=2h --storage.tsdb.max-block-duration=2h \
    --web.listen-address="127.0.0.1:$PROM_HTTP" --log.level=warn >"$dir.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_ready "http://127.0.0.1:$PROM_HTTP/-/ready" "$pid" "prometheus" || { tail -20 "$dir.log" >&2; exit 1; }
  t1=$(now_ns)
  READY_MS[prom.$i]=$(((t1 - t0) / 1000000))
  READY_RSS[prom.$i]=$(rss_kb "$pid")
  t1=$(now_ns)
  PROM_ANSWER=$(query_range "$PROM_HTTP" | summary) || { log "prometheus query failed"; exit 1; }
  t2=$(now_ns)
  QUERY_MS[prom.$i]=$(((t2 - t1) / 1000000))
  QUERY_RSS[prom.$i]=$(rss_kb "$pid")
  stop_pid "$pid"
  rm -rf "$dir"
}

for ((i = 1; i <= RUNS; i++)); do
  log "run $i/$RUNS: strata store-gateway"
  run_strata "$i"
  log "run $i/$RUNS: prometheus"
  run_prometheus "$i"
done

log "strata answer:     $STRATA_ANSWER"
log "prometheus answer: $PROM_ANSWER"
[[ "$STRATA_ANSWER" == "$PROM_ANSWER" ]] || { log "the answers differ"; exit 1; }

med() { # med ARRAY SYSTEM
  local -n arr=$1
  for ((i = 1; i <= RUNS; i++)); do echo "${arr[$2.$i]}"; done | median
}
row() { # row LABEL ARRAY UNIT DIVISOR
  local s p
  s=$(med "$2" strata) p=$(med "$2" prom)
  awk -v l="$1" -v s="$s" -v p="$p" -v d="$4" -v u="$3" \
    'BEGIN { printf "%-34s %12.1f %12.1f %10s\n", l " (" u ")", s / d, p / d, (p > 0 ? sprintf("%.2f", s / p) : "-") }'
}

echo
echo "1,000 small blocks, median of $RUNS runs (query: $QUERY, all blocks, step 10m)"
printf '%-34s %12s %12s %10s\n' "" "strata" "prometheus" "ratio"
row "time to ready" READY_MS ms 1
row "RSS at ready" READY_RSS MiB 1024
row "first query over all blocks" QUERY_MS ms 1
row "RSS after the query" QUERY_RSS MiB 1024
echo "strata: store-gateway (empty data dir, FILESYSTEM bucket), queried through a strata querier (not counted);"
echo "prometheus: $(go list -m -f '{{.Path}} {{.Version}}' github.com/prometheus/prometheus) (cmd/prometheus), blocks copied to a fresh --storage.tsdb.path per run"
