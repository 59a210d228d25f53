#!/usr/bin/env bash
# Regenerates the Go code for the StoreAPI protobufs under pkg/store.
#
# protoc-gen-go and protoc-gen-go-grpc are built from the versions pinned in
# tools/go.mod into a temporary directory, so the output only depends on those
# pins and on the protoc binary. Generated files are written next to their
# .proto files (paths=source_relative). Running the script twice yields the
# same tree.
#
# Environment:
#   PROTOC          protoc binary (default: protoc from PATH).
#   PROTOC_INCLUDE  directory holding google/protobuf/*.proto
#                   (default: /usr/include, as installed by Debian's libprotobuf-dev).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

PROTOC="${PROTOC:-protoc}"
PROTOC_INCLUDE="${PROTOC_INCLUDE:-/usr/include}"

PROTOS=(
  pkg/store/labelpb/types.proto
  pkg/store/storepb/types.proto
  pkg/store/storepb/rpc.proto
  pkg/store/storepb/prompb/types.proto
  pkg/store/storepb/prompb/remote.proto
  pkg/store/infopb/rpc.proto
  pkg/store/hintspb/hints.proto
  pkg/store/metadatapb/rpc.proto
  pkg/store/cardinalitypb/rpc.proto
)

if ! command -v "${PROTOC}" >/dev/null 2>&1; then
  echo "genproto: protoc not found (set PROTOC)" >&2
  exit 1
fi
if [[ ! -f "${PROTOC_INCLUDE}/google/protobuf/any.proto" ]]; then
  echo "genproto: well-known types not found under ${PROTOC_INCLUDE}: apt-get install libprotobuf-dev (or set PROTOC_INCLUDE)" >&2
  exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

go build -modfile=tools/go.mod -o "${TMP}/" \
  google.golang.org/protobuf/cmd/protoc-gen-go \
  google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto

# Drop previously generated code so that removed messages/services do not linger.
for proto in "${PROTOS[@]}"; do
  dir="$(dirname "${proto}")"
  find "${dir}" -maxdepth 1 -type f \( -name '*.pb.go' \) -delete
done

"${PROTOC}" \
  -I . \
  -I "${PROTOC_INCLUDE}" \
  --plugin=protoc-gen-go="${TMP}/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="${TMP}/protoc-gen-go-grpc" \
  --plugin=protoc-gen-go-vtproto="${TMP}/protoc-gen-go-vtproto" \
  --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size \
  "${PROTOS[@]}"

