// Package prompb holds Thanos' copy of the Prometheus remote read/write types (proto package
// "prometheus_copy"), used by the StoreAPI's RemoteWrite. Generated from types.proto and remote.proto by
// scripts/genproto.sh.
package prompb
