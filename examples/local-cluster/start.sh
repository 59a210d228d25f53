#!/usr/bin/env bash
# Starts a Strata cluster on this host, in the background, with all state under DIR:
#   3 ingesters in zones a, b, c (replication factor 3, zone-aware), 1 distributor, 3 store-gateways in zones
#   a, b, c (each block served by 3 of them, one per zone), 1 querier behind 1 query-frontend, one filesystem
#   bucket.
# Usage: start.sh DIR [component ...]   (components: distributor ingester-a ingester-b ingester-c
#   store-gateway-a store-gateway-b store-gateway-c querier query-frontend; default: all)
# Returns once every started process is ready, the distributor sees 3 ingesters in the ring and the querier sees
# every running store-gateway ACTIVE in the store-gateway ring.
# PIDs go to DIR/<component>.pid, logs to DIR/<component>.log. Stop with stop.sh DIR.
# Ports (all on 127.0.0.1; STRATA_PORT_OFFSET shifts them all): distributor HTTP 8080, gRPC 9095, gossip 7946;
# ingester-a/b/c HTTP 8081-8083, gRPC 9096-9098, gossip 7947-7949; querier HTTP 8087, gRPC 9090, gossip 7950;
# store-gateway-a/b/c HTTP 8084-8086, gRPC 9084-9086, gossip 7951-7953; query-frontend HTTP 8090 (the public
# query API, in front of the querier), gRPC 9091 (unused).
# Environment: STRATA_BIN, STRATA_PORT_OFFSET, STRATA_BLOCK_DURATION (default 2h), STRATA_SYNC_INTERVAL (how often
# the store-gateways scan the bucket, default 15m), STRATA_BLOCKS_REFRESH_INTERVAL (how often the querier reads the
# bucket's block list, default 1m), STRATA_UPLOAD_GRACE_PERIOD (blocks younger than this are not asked of the
# store-gateways, default 30m; keep it ≥ 2 × STRATA_SYNC_INTERVAL), STRATA_IGNORE_DELETION_MARKS_DELAY (how long the
# store-gateways and the querier keep serving blocks marked for deletion; default the flag's).
set -euo pipefail

DIR=${1:?usage: start.sh DIR [component ...]}
shift || true
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OFF=${STRATA_PORT_OFFSET:-0}
BLOCK_DURATION=${STRATA_BLOCK_DURATION:-2h}
SYNC_INTERVAL=${STRATA_SYNC_INTERVAL:-15m}
BLOCKS_REFRESH_INTERVAL=${STRATA_BLOCKS_REFRESH_INTERVAL:-1m}
UPLOAD_GRACE_PERIOD=${STRATA_UPLOAD_GRACE_PERIOD:-30m}

STRATA=${STRATA_BIN:-}
if [[ -z "$STRATA" ]]; then
  STRATA="$DIR/bin/strata"
  if [[ ! -x "$STRATA" ]]; then
    echo "building strata into $STRATA"
    (cd "$ROOT" && go build -o "$STRATA" ./cmd/strata)
  fi
fi

mkdir -p "$DIR/bucket"
cat > "$DIR/objstore.yaml" <<YAML
type: FILESYSTEM
config:
  directory: $DIR/bucket
YAML

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
port() { echo $(($1 + OFF)); }
JOIN=()
for p in 7946 7947 7948 7949; do JOIN+=("--memberlist.join=127.0.0.1:$(port $p)"); done
COMMON=(--memberlist.bind-addr=127.0.0.1 "${JOIN[@]}" --objstore.config-file="$DIR/objstore.yaml"
  --ingester.ring.replication-factor=3 --distributor.zone-awareness-enabled
  --ingester.ring.heartbeat-period=1s --ingester.ring.heartbeat-timeout=10s --auth.multitenancy-enabled
  --store-gateway.ring.replication-factor=3 --store-gateway.zone-awareness-enabled
  --store-gateway.ring.heartbeat-period=1s --store-gateway.ring.heartbeat-timeout=10s
  ${STRATA_IGNORE_DELETION_MARKS_DELAY:+--store-gateway.ignore-deletion-marks-delay=$STRATA_IGNORE_DELETION_MARKS_DELAY})

start() { # name http grpc gossip args...
  local name=$1 http=$(port "$2") grpc=$(port "$3") gossip=$(port "$4"); shift 4
  if [[ -f "$DIR/$name.pid" ]] && alive "$(cat "$DIR/$name.pid")"; then
    echo "$name already running (pid $(cat "$DIR/$name.pid"))"; return
  fi
  "$STRATA" "$@" "${COMMON[@]}" --http-address="127.0.0.1:$http" --grpc-address="127.0.0.1:$grpc" \
    --memberlist.bind-port="$gossip" --data-dir="$DIR/$name" >>"$DIR/$name.log" 2>&1 &
  echo $! > "$DIR/$name.pid"
  echo "started $name (pid $!, http 127.0.0.1:$http, grpc 127.0.0.1:$grpc)"
  STARTED+=("$name:$http")
}

# wait_seed waits (at most 20s) until one of the gossip seeds (the ingesters and the distributor) listens, so that a
# component started after them joins the memberlist cluster at once (its fast join fails, logged as an error and
# retried, when no seed is up yet). Without any seed running it goes on after the 20s.
wait_seed() {
  local deadline=$((SECONDS + 20)) p
  while (( SECONDS < deadline )); do
    for p in 7946 7947 7948 7949; do
      (exec 3<>"/dev/tcp/127.0.0.1/$(port $p)") 2>/dev/null && return 0
    done
    sleep 0.1
  done
}

ingester() { # zone index
  local z=$1 i=$2
  start "ingester-$z" $((8081 + i)) $((9096 + i)) $((7947 + i)) ingester --ingester.id="ingester-$z" \
    --ingester.availability-zone="$z" --tsdb.block-duration="$BLOCK_DURATION"
}

store_gateway() { # zone index
  local z=$1 i=$2
  start "store-gateway-$z" $((8084 + i)) $((9084 + i)) $((7951 + i)) store-gateway --store-gateway.id="store-gateway-$z" \
    --store-gateway.availability-zone="$z" --sync-interval="$SYNC_INTERVAL"
}

WANT=("$@")
[[ ${#WANT[@]} -eq 0 ]] && WANT=(ingester-a ingester-b ingester-c distributor store-gateway-a store-gateway-b store-gateway-c querier query-frontend)
STARTED=()
for c in "${WANT[@]}"; do
  case "$c" in
    ingester-a) ingester a 0 ;;
    ingester-b) ingester b 1 ;;
    ingester-c) ingester c 2 ;;
    distributor) start distributor 8080 9095 7946 distributor ;;
    store-gateway-a) wait_seed; store_gateway a 0 ;;
    store-gateway-b) wait_seed; store_gateway b 1 ;;
    store-gateway-c) wait_seed; store_gateway c 2 ;;
    querier) wait_seed; start querier 8087 9090 7950 querier --querier.blocks-refresh-interval="$BLOCKS_REFRESH_INTERVAL" \
      --querier.blocks-upload-grace-period="$UPLOAD_GRACE_PERIOD" ;;
    query-frontend) wait_seed; start query-frontend 8090 9091 7954 query-frontend \
      --query-frontend.downstream-url="http://127.0.0.1:$(port 8087)" \
      --querier.blocks-refresh-interval="$BLOCKS_REFRESH_INTERVAL" --querier.blocks-upload-grace-period="$UPLOAD_GRACE_PERIOD" \
      --query-frontend.results-cache.ingester-url="http://127.0.0.1:$(port 8081)" \
      --query-frontend.results-cache.ingester-url="http://127.0.0.1:$(port 8082)" \
      --query-frontend.results-cache.ingester-url="http://127.0.0.1:$(port 8083)" ;;
    *) echo "unknown component $c" >&2; exit 2 ;;
  esac
done

# Wait (at most 90s) for every started process to be ready.
deadline=$((SECONDS + 90))
for s in "${STARTED[@]}"; do
  name=${s%%:*} http=${s##*:}
  until curl -sf "http://127.0.0.1:$http/ready" >/dev/null; do
    if ! alive "$(cat "$DIR/$name.pid")"; then echo "$name exited; see $DIR/$name.log" >&2; tail -20 "$DIR/$name.log" >&2; exit 1; fi
    if (( SECONDS > deadline )); then echo "$name not ready after 90s; see $DIR/$name.log" >&2; exit 1; fi
    sleep 0.5
  done
done

# And for the distributor's view of the ring to hold 3 ACTIVE ingesters.
if [[ -f "$DIR/distributor.pid" ]] && alive "$(cat "$DIR/distributor.pid")"; then
  until [[ $(curl -sf -H 'Accept: application/json' "http://127.0.0.1:$(port 8080)/ingester/ring" | grep -o '"state":"ACTIVE"' | wc -l) -ge 3 ]]; do
    if (( SECONDS > deadline )); then echo "the ring did not reach 3 ACTIVE ingesters in time" >&2; exit 1; fi
    sleep 0.5
  done
fi

# And for every running store-gateway to be ACTIVE in the store-gateway ring, as the querier sees it (or, without a
# querier, as the first running store-gateway sees it). The ring page answers JSON with Accept: application/json:
# {"shards":[{"id":"store-gateway-a","state":"ACTIVE",…},…]} (UNHEALTHY once heartbeats stop).
RING_HTTP=
for c in querier:8087 store-gateway-a:8084 store-gateway-b:8085 store-gateway-c:8086; do
  if [[ -f "$DIR/${c%%:*}.pid" ]] && alive "$(cat "$DIR/${c%%:*}.pid")"; then RING_HTTP=$(port "${c##*:}"); break; fi
done
for z in a b c; do
  [[ -n "$RING_HTTP" && -f "$DIR/store-gateway-$z.pid" ]] && alive "$(cat "$DIR/store-gateway-$z.pid")" || continue
  until curl -sf -H 'Accept: application/json' "http://127.0.0.1:$RING_HTTP/store-gateway/ring" | grep -q "\"id\":\"store-gateway-$z\",\"state\":\"ACTIVE\""; do
    if (( SECONDS > deadline )); then echo "store-gateway-$z is not ACTIVE in the store-gateway ring in time" >&2; exit 1; fi
    sleep 0.5
  done
done
echo "ready: remote write to http://127.0.0.1:$(port 8080)/api/v1/push, query http://127.0.0.1:$(port 8090)/prometheus (X-Scope-OrgID: <tenant>)"
