#!/usr/bin/env bash
# Starts a Strata cluster on this host, in the background, with all state under DIR:
#   3 ingesters in zones a, b, c (replication factor 3, zone-aware), 1 distributor, 1 querier, one filesystem
#   bucket.
# Usage: start.sh DIR [component ...]   (components: distributor ingester-a ingester-b ingester-c querier;
#   default: all)
# Returns once every started process is ready and the distributor sees 3 ingesters in the ring.
# PIDs go to DIR/<component>.pid, logs to DIR/<component>.log. Stop with stop.sh DIR.
# Ports (all on 127.0.0.1; STRATA_PORT_OFFSET shifts them all): distributor HTTP 8080, gRPC 9095, gossip 7946;
# ingester-a/b/c HTTP 8081-8083, gRPC 9096-9098, gossip 7947-7949; querier HTTP 8090, gRPC 9090, gossip 7950.
set -euo pipefail

DIR=${1:?usage: start.sh DIR [component ...]}
shift || true
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OFF=${STRATA_PORT_OFFSET:-0}
BLOCK_DURATION=${STRATA_BLOCK_DURATION:-2h}

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

# alive PID: the process exists and is not a zombie (a killed process whose parent is gone may stay one).
alive() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    [[ $(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat") != Z ]]
  fi
}
port() { echo $(($1 + OFF)); }
JOIN=()
for p in 7946 7947 7948 7949; do JOIN+=("--memberlist.join=127.0.0.1:$(port $p)"); done
COMMON=(--memberlist.bind-addr=127.0.0.1 "${JOIN[@]}" --objstore.config-file="$DIR/objstore.yaml"
  --ingester.ring.replication-factor=3 --distributor.zone-awareness-enabled
  --ingester.ring.heartbeat-period=1s --ingester.ring.heartbeat-timeout=10s --auth.multitenancy-enabled)

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

ingester() { # zone index
  local z=$1 i=$2
  start "ingester-$z" $((8081 + i)) $((9096 + i)) $((7947 + i)) ingester --ingester.id="ingester-$z" \
    --ingester.availability-zone="$z" --tsdb.block-duration="$BLOCK_DURATION"
}

WANT=("$@")
[[ ${#WANT[@]} -eq 0 ]] && WANT=(ingester-a ingester-b ingester-c distributor querier)
STARTED=()
for c in "${WANT[@]}"; do
  case "$c" in
    ingester-a) ingester a 0 ;;
    ingester-b) ingester b 1 ;;
    ingester-c) ingester c 2 ;;
    distributor) start distributor 8080 9095 7946 distributor ;;
    querier) start querier 8090 9090 7950 querier ;;
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
echo "ready: remote write to http://127.0.0.1:$(port 8080)/api/v1/push, query http://127.0.0.1:$(port 8090)/prometheus (X-Scope-OrgID: <tenant>)"
