// Package infopb holds the Thanos Info API (service thanos.info.Info), through which a querier discovers
// which APIs an endpoint serves, its external label sets and time range. Generated from rpc.proto by
// scripts/genproto.sh.
package infopb
