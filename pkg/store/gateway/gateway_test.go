package gateway

import (
	"strings"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/oklog/ulid/v2"

	"github.com/stratametrics/strata/pkg/ring"
)

// fakeRing answers Get with the owners of each block, by its ring key.
type fakeRing struct {
	dskitring.ReadRing
	owners map[uint32][]string
	ops    []dskitring.Operation
}

func (r *fakeRing) Get(key uint32, op dskitring.Operation, _ []dskitring.InstanceDesc, _, _ []string) (dskitring.ReplicationSet, error) {
	r.ops = append(r.ops, op)
	addrs, ok := r.owners[key]
	if !ok {
		return dskitring.ReplicationSet{}, errors.New("no owners")
	}
	var rs dskitring.ReplicationSet
	for _, a := range addrs {
		rs.Instances = append(rs.Instances, dskitring.InstanceDesc{Addr: a})
	}
	return rs, nil
}

func TestGatewayOwns(t *testing.T) {
	mine, others, unknown := ulid.MustNew(1, nil), ulid.MustNew(2, nil), ulid.MustNew(3, nil)
	r := &fakeRing{owners: map[uint32][]string{
		ring.HashBlockID(mine):   {"10.0.0.2:9095", "10.0.0.1:9095"},
		ring.HashBlockID(others): {"10.0.0.2:9095", "10.0.0.3:9095"},
	}}
	g := &Gateway{cfg: Config{Instance: ring.InstanceConfig{Addr: "10.0.0.1:9095"}}, ring: r}
	for _, tc := range []struct {
		name    string
		id      ulid.ULID
		want    bool
		wantErr bool
	}{
		{name: "one of the block's owners", id: mine, want: true},
		{name: "not among the block's owners", id: others, want: false},
		{name: "the ring cannot tell", id: unknown, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := g.owns("tenant", tc.id)
			if tc.wantErr {
				testutil.NotOk(t, err)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, got)
		})
	}
	for _, op := range r.ops {
		testutil.Equals(t, ring.BlocksOwnerSync, op, "a gateway holds the blocks of the sync operation (joining and leaving gateways too)")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		modify  func(*Config)
		wantErr string
	}{
		{name: "defaults", modify: func(*Config) {}},
		{name: "no sync interval", modify: func(c *Config) { c.SyncInterval = 0 }, wantErr: "sync_interval must be positive"},
		{name: "negative deletion mark delay", modify: func(c *Config) { c.IgnoreDeletionMarkDelay = -1 }, wantErr: "ignore_deletion_mark_delay must not be negative"},
		{name: "bad index cache", modify: func(c *Config) { c.IndexCache.Backend = "nope" }, wantErr: "store_gateway.index_cache"},
		{name: "bad chunks cache", modify: func(c *Config) { c.ChunksCache.Backend = "nope" }, wantErr: "store_gateway.chunks_cache"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.modify(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				testutil.Ok(t, err)
				return
			}
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), err.Error())
		})
	}
}
