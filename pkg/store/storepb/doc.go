// Package storepb holds the wire types and gRPC services of the Thanos StoreAPI (proto package "thanos":
// services thanos.Store and thanos.WriteableStore), generated from rpc.proto and types.proto by
// scripts/genproto.sh, plus the "snappy" gRPC compressor Thanos components use. Message names and field
// numbers match Thanos, so Thanos queriers and stores can talk to Strata and vice versa.
package storepb
