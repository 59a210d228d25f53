package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"

	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
)

// ingesterRing is the ingester ring as one process sees it: the KV store and a client of the ring.
type ingesterRing struct {
	kv     *ring.KV
	client *dskitring.Ring
	// users are the parts (an ingester leaving the ring) that must finish before gossip stops.
	users sync.WaitGroup
	// local are the ingesters of this process by ring address (strata all), read without a gRPC hop.
	local map[string]*receive.Ingester
}

// setupIngesterRing joins the KV store (memberlist gossip or in-memory) and watches the ingester ring; the ring
// page is served at /ingester/ring (HTML, or JSON with Accept: application/json; with a forget button).
func setupIngesterRing(p *process) error {
	r, err := setupKV(p)
	if err != nil {
		return err
	}
	client, err := ring.NewClient(p.cfg.IngesterRing, r.kv, "ingester", ring.IngesterRingKey, p.logger, p.reg)
	if err != nil {
		return errSetup(err, "ingester ring client")
	}
	r.client = client
	watchRing(p, client, "ingester", "Ingesters")
	return nil
}

// setupKV joins the KV store the process's rings live in (memberlist gossip or in-memory), once per process
// (p.ingesterRing, whose client is set only by setupIngesterRing).
func setupKV(p *process) (*ingesterRing, error) {
	if p.ingesterRing != nil {
		return p.ingesterRing, nil
	}
	logger := p.logger
	kv, err := ring.NewKV(p.cfg.Memberlist, logger, p.reg, receive.HAReplicaCodec())
	if err != nil {
		return nil, errSetup(err, "ring KV store")
	}
	r := &ingesterRing{kv: kv}
	if svc := kv.Service(); svc != nil {
		ready := p.srv.Ready.Register("memberlist")
		addContextActor(p.g, func(ctx context.Context) error {
			return ring.RunService(ctx, svc, ready, func() { kv.Stopping(); r.waitUsers(logger) })
		})
	}
	p.ingesterRing = r
	return r, nil
}

// setupGatewayRing watches the store-gateway ring (in the KV store of the ingester ring); its page is
// /store-gateway/ring.
func setupGatewayRing(p *process) error {
	client, err := ring.NewGatewayClient(p.cfg.StoreGatewayRing, p.ingesterRing.kv, p.logger, p.reg)
	if err != nil {
		return errSetup(err, "store-gateway ring client")
	}
	watchRing(p, client, "store-gateway", "Store-gateways")
	p.gatewayRing = client
	return nil
}

// watchRing runs the client of the ring of a component (ready once it has read the ring) and serves its page at
// /<component>/ring.
func watchRing(p *process, client *dskitring.Ring, component, members string) {
	ready := p.srv.Ready.Register(component + "-ring")
	addContextActor(p.g, func(ctx context.Context) error { return ring.RunService(ctx, client, ready, nil) })
	path := "/" + component + "/ring"
	p.srv.Handle(path, p.admin(client))
	p.srv.AddLinks(strings.ToUpper(component[:1])+component[1:]+" ring", server.Link{Path: path, Desc: members + " in the ring (JSON with Accept: application/json)"})
}

// ringInstance is inst with its address (default: the gRPC server's, 0.0.0.0 replaced by this host's address)
// and tokens file (default: <data-dir>/<component>-tokens.json) filled in.
func ringInstance(p *process, inst ring.InstanceConfig, component string) (ring.InstanceConfig, error) {
	if inst.Addr == "" {
		addr, err := ring.AdvertiseAddr(p.srv.GRPCAddr(), hostAddr())
		if err != nil {
			return inst, errSetup(err, component+" address")
		}
		inst.Addr = addr
	}
	if inst.TokensFile == "" {
		inst.TokensFile = filepath.Join(p.cfg.DataDir, component+"-tokens.json")
	}
	return inst, nil
}

// waitUsers waits (at most 2 minutes) for the parts that need the ring while they shut down.
func (r *ingesterRing) waitUsers(logger log.Logger) {
	done := make(chan struct{})
	go func() { r.users.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		level.Warn(logger).Log("msg", "stopping gossip before the ingester left the ring")
	}
}

// limitShare is this ingester's share of a tenant's global series limits: RF / zones / ingesters in its zone,
// or in the tenant's shuffle shard (DESIGN.md §9, receive.GlobalLimitShare), with RF capped at the ring's size.
func (r *ingesterRing) limitShare(cfg *Config, shardSize func(tenant string) int) func(tenant string) float64 {
	return func(tenant string) float64 {
		n := r.client.InstancesCount()
		if n <= 0 {
			return 1
		}
		rf := min(cfg.IngesterRing.ReplicationFactor, n)
		if cfg.IngesterRing.ZoneAwarenessEnabled && cfg.Ingester.Instance.Zone != "" {
			if zones, inZone := r.client.ZonesCount(), r.client.InstancesInZoneCount(cfg.Ingester.Instance.Zone); zones > 0 && inZone > 0 {
				return receive.GlobalLimitShare(rf, zones, inZone, shardSize(tenant))
			}
		}
		return receive.GlobalLimitShare(rf, 1, n, shardSize(tenant))
	}
}

// hostAddr is the address to advertise for a listener bound to all interfaces: the first non-loopback IPv4
// address, else 127.0.0.1.
func hostAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
