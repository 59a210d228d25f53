// Package labelpb holds the label wire types of the Thanos StoreAPI (proto package "thanos"), generated
// from types.proto by scripts/genproto.sh.
package labelpb
