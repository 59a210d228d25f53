package receive

import (
	"encoding/binary"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/grafana/dskit/kv/codec"
	"github.com/grafana/dskit/kv/memberlist"
)

// HAReplicaDesc is the value of one HA cluster's key in the KV store (ha-tracker/<tenant>/<cluster>): the replica
// whose samples the distributors store. Timestamps are Unix milliseconds of the distributors' clocks.
//
// It is a memberlist.Mergeable whose merge keeps the greater of two values in a total order (see newerThan), so
// gossip converges to the same value on every distributor whatever order updates arrive in: a later election
// beats an earlier one, and within one election a later heartbeat (ReceivedAt) or deletion mark beats an earlier
// one.
type HAReplicaDesc struct {
	// Replica is the elected replica (the value of the tenant's ha_replica_label).
	Replica string
	// ReceivedAt is when a distributor last wrote that it received samples from Replica. Distributors write it
	// at most every ha_tracker_update_timeout, so it lags the last sample by up to that much.
	ReceivedAt int64
	// ElectedAt is when Replica was elected.
	ElectedAt int64
	// ElectedChanges counts the elections of the cluster so far (the first one included).
	ElectedChanges int64
	// DeletedAt, when not 0, is when the cleanup marked the cluster deleted (no sample for 30 minutes): the value
	// then stands for no elected replica, and the key is deleted from the KV store 30 minutes later.
	DeletedAt int64
}

// newerThan reports whether d comes after o in the merge order: ElectedAt, then ReceivedAt, then DeletedAt, then
// ElectedChanges, then Replica. The order is total, so merging is commutative, associative and idempotent.
func (d *HAReplicaDesc) newerThan(o *HAReplicaDesc) bool {
	switch {
	case d.ElectedAt != o.ElectedAt:
		return d.ElectedAt > o.ElectedAt
	case d.ReceivedAt != o.ReceivedAt:
		return d.ReceivedAt > o.ReceivedAt
	case d.DeletedAt != o.DeletedAt:
		return d.DeletedAt > o.DeletedAt
	case d.ElectedChanges != o.ElectedChanges:
		return d.ElectedChanges > o.ElectedChanges
	}
	return d.Replica > o.Replica
}

// Merge keeps the newer of d and other (see newerThan). It returns the new value when other was newer, nil when
// d stays as it was.
func (d *HAReplicaDesc) Merge(other memberlist.Mergeable, _ bool) (memberlist.Mergeable, error) {
	if other == nil {
		return nil, nil
	}
	o, ok := other.(*HAReplicaDesc)
	if !ok {
		return nil, errors.Newf("merge an HA replica with a %T", other)
	}
	if o == nil || !o.newerThan(d) {
		return nil, nil
	}
	*d = *o
	return d.Clone(), nil
}

// MergeContent is the elected replica: a value is never a subset of another.
func (d *HAReplicaDesc) MergeContent() []string { return []string{d.Replica} }

// RemoveTombstones does nothing: a deleted cluster is a value (DeletedAt), which the tracker handles itself.
func (d *HAReplicaDesc) RemoveTombstones(time.Time) (total, removed int) { return 0, 0 }

// Clone returns a copy of d.
func (d *HAReplicaDesc) Clone() memberlist.Mergeable {
	c := *d
	return &c
}

// haReplicaCodecID names the codec in the KV store; it must not change once a cluster uses it.
const haReplicaCodecID = "strata-ha-replica"

// maxHAReplicaNameBytes bounds the replica name a decoded value may carry (longer ones are refused by the
// validation's max_label_value_length long before they reach the tracker).
const maxHAReplicaNameBytes = 64 << 10

// haReplicaCodec encodes HAReplicaDesc as a version byte, the four timestamps and counter as varints, and the
// replica as a length-prefixed string.
type haReplicaCodec struct{}

// HAReplicaCodec is the codec of the HA tracker's values. Every process that gossips must register it with the
// memberlist KV (ring.NewKV), so that each relays and merges the elected replicas.
func HAReplicaCodec() codec.Codec { return haReplicaCodec{} }

func (haReplicaCodec) CodecID() string { return haReplicaCodecID }

const haReplicaCodecVersion = 1

func (haReplicaCodec) Encode(v any) ([]byte, error) {
	d, ok := v.(*HAReplicaDesc)
	if !ok || d == nil {
		return nil, errors.Newf("encode an HA replica: got %T", v)
	}
	b := make([]byte, 0, 1+5*binary.MaxVarintLen64+len(d.Replica))
	b = append(b, haReplicaCodecVersion)
	for _, n := range []int64{d.ReceivedAt, d.ElectedAt, d.ElectedChanges, d.DeletedAt} {
		b = binary.AppendVarint(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(d.Replica)))
	return append(b, d.Replica...), nil
}

func (haReplicaCodec) Decode(b []byte) (any, error) {
	if len(b) == 0 || b[0] != haReplicaCodecVersion {
		return nil, errors.New("decode an HA replica: unknown version")
	}
	b = b[1:]
	d := &HAReplicaDesc{}
	for _, dst := range []*int64{&d.ReceivedAt, &d.ElectedAt, &d.ElectedChanges, &d.DeletedAt} {
		n, k := binary.Varint(b)
		if k <= 0 {
			return nil, errors.New("decode an HA replica: truncated timestamp")
		}
		*dst, b = n, b[k:]
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxHAReplicaNameBytes || n != uint64(len(b)-k) {
		return nil, errors.New("decode an HA replica: bad replica name length")
	}
	d.Replica = string(b[k:])
	return d, nil
}
