#!/usr/bin/env bash
# Checks, before any test runs, that this machine has what the tests need, and says how to get what is missing.
# `make test` runs it first, so a machine without memcached fails in a second, not after 13 minutes of tests.
#   scripts/test-deps.sh [--proto]            check; exit 1 naming what is missing (--proto: also `make proto`'s)
#   scripts/test-deps.sh --install [--proto]  install what is missing with apt-get (Debian, as root), then check
# What the tests need besides Go: memcached (pkg/cache and the store-gateway tests start a real one), curl (the
# tutorials' commands, run by test/e2e), git (version stamping). `make proto` needs protoc with the well-known
# types (protobuf-compiler and libprotobuf-dev).
set -euo pipefail

# command -> Debian package
declare -A PKG=([memcached]=memcached [curl]=curl [git]=git)
declare -A PROTO_PKG=([protoc]=protobuf-compiler)

install=false proto=false
for a in "$@"; do
  case $a in
    --install) install=true ;;
    --proto) proto=true ;;
    *) echo "usage: $0 [--install] [--proto]" >&2; exit 2 ;;
  esac
done

missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/bin/$cmd ]] || missing+=("${PKG[$cmd]}")
done
if $proto; then
  for cmd in "${!PROTO_PKG[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PROTO_PKG[$cmd]}")
  done
  [[ -f /usr/include/google/protobuf/descriptor.proto ]] || missing+=(libprotobuf-dev)
fi
command -v go >/dev/null 2>&1 || { echo "test-deps: go is not installed (Go 1.26 is needed)" >&2; exit 1; }

[[ ${#missing[@]} -eq 0 ]] && exit 0

if $install; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: missing ${missing[*]}; --install needs root and apt-get" >&2
    exit 1
  fi
  echo "test-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $proto && exec "$0" --proto
  exec "$0"
fi

echo "test-deps: the tests need ${missing[*]}, which this machine does not have." >&2
echo "  Install: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
echo "  (or: make test-deps, which runs scripts/test-deps.sh --install as root)" >&2
exit 1
