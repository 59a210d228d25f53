package receive

import (
	"context"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// compressedRetry is how long a distributor sends an ingester that answered RemoteWriteCompressed Unimplemented
// (a Strata version without it, during a rolling upgrade) RemoteWrites before it asks again.
const compressedRetry = 5 * time.Minute

// compressedSupport tracks which ingesters take RemoteWriteCompressed: any ingester is asked, and one that
// answers Unimplemented gets RemoteWrites for compressedRetry.
type compressedSupport struct {
	now func() time.Time
	mtx sync.Mutex
	// answered: addresses that answered RemoteWriteCompressed (other than Unimplemented), until they do not.
	answered map[string]bool
	// refusedUntil: addresses that answered Unimplemented, until when they get RemoteWrites.
	refusedUntil map[string]time.Time
}

func newCompressedSupport(now func() time.Time) *compressedSupport {
	return &compressedSupport{now: now, answered: map[string]bool{}, refusedUntil: map[string]time.Time{}}
}

// use says whether to send addr a compressed write.
func (c *compressedSupport) use(addr string) bool {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	until, ok := c.refusedUntil[addr]
	if ok && c.now().After(until) {
		delete(c.refusedUntil, addr)
		ok = false
	}
	return !ok
}

// allAnswered says whether every instance has taken compressed writes: then none needs the request encoded for
// a RemoteWrite (see RingPusher.push).
func (c *compressedSupport) allAnswered(insts []dskitring.InstanceDesc) bool {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	for _, inst := range insts {
		if !c.answered[inst.Addr] {
			return false
		}
	}
	return true
}

// record records addr's answer: supported false for Unimplemented.
func (c *compressedSupport) record(addr string, supported bool) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	if supported {
		c.answered[addr] = true
		return
	}
	delete(c.answered, addr)
	c.refusedUntil[addr] = c.now().Add(compressedRetry)
}

// sendCompressed sends inst the request as received (RemoteWriteCompressed). handled false: the ingester does not
// take it (Unimplemented), and the write is to be sent as a RemoteWrite instead; nothing was written.
func (p *RingPusher) sendCompressed(ctx context.Context, conn *grpc.ClientConn, inst dskitring.InstanceDesc, tenant string, compressed []byte) (handled bool, err error) {
	var hdr metadata.MD // the ingester's report of the tenant's usage (limit_usage.go)
	err = conn.Invoke(tenancy.OutgoingContext(ctx, tenant), RemoteWriteCompressedFullMethodName,
		&compressedWrite{tenant: tenant, body: compressed}, new(storepb.WriteResponse), grpc.Header(&hdr))
	if status.Code(err) == codes.Unimplemented {
		p.compressedSupport.record(inst.Addr, false)
		p.metrics.compressed.WithLabelValues("unimplemented").Inc()
		level.Info(p.logger).Log("msg", "ingester does not take compressed writes (an older version?): sending it RemoteWrites",
			"ingester", inst.Id, "addr", inst.Addr, "retry_in", compressedRetry, "err", err)
		return false, nil
	}
	p.compressedSupport.record(inst.Addr, true)
	p.metrics.compressed.WithLabelValues("sent").Inc()
	p.observeRemote(tenant, inst.Id, hdr)
	return true, err
}
