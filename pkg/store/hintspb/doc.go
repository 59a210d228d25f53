// Package hintspb holds the hints Thanos queriers and stores exchange inside the google.protobuf.Any hints
// fields of the StoreAPI (proto package "hintspb"). Generated from hints.proto by scripts/genproto.sh.
package hintspb
