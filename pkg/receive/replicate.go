package receive

import (
	"context"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	dskitring "github.com/grafana/dskit/ring"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// WriteRing is what the replicating pusher needs of the ingester ring (a *ring.Ring).
type WriteRing interface {
	dskitring.DoBatchRing
	GetAllHealthy(op dskitring.Operation) (dskitring.ReplicationSet, error)
	// ShuffleShard is the subring of a tenant's shuffle shard (shuffle_shard.go).
	ShuffleShard(identifier string, size int) dskitring.ReadRing
}

type replicationMetrics struct {
	quorumFailures *prometheus.CounterVec
	sent           *prometheus.CounterVec
	compressed     *prometheus.CounterVec
}

// RingPusher shards each series of a write over the ingester ring (or the tenant's shuffle shard of it, see
// WithShuffleSharding) by a hash of the tenant and its labels and sends it to the replication factor's owners
// (distinct zones with zone awareness), one RemoteWrite per ingester per request. Push returns once a quorum of owners acknowledged every series; the rest of the
// replicas still get their write (detached from the caller's context, bounded by the timeout).
type RingPusher struct {
	ring    WriteRing
	timeout time.Duration
	logger  log.Logger
	metrics replicationMetrics
	// dialOpts are added to store.DialOptions for connections to the ingesters (TLS, cluster secret).
	dialOpts []grpc.DialOption
	// local are in-process ingesters by ring address: written without a gRPC hop (strata all).
	local map[string]Pusher
	// shardSize is a tenant's ingestion_tenant_shard_size (nil: no shuffle sharding; see WithShuffleSharding).
	shardSize func(tenant string) int

	// scratch pools the per-request keys and encoded series (see forwardScratch).
	scratch forwardPool
	// usage receives the ingesters' reports of tenants' series usage (limit_usage.go); nil: none kept.
	usage *limitUsage

	// compressedSupport: which ingesters take RemoteWriteCompressed.
	compressedSupport *compressedSupport

	mtx   sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewRingPusher returns a pusher over r; writes to one ingester time out after timeout.
func NewRingPusher(r WriteRing, timeout time.Duration, local map[string]Pusher, logger log.Logger, reg prometheus.Registerer) *RingPusher {
	return &RingPusher{
		ring: r, timeout: timeout, local: local, logger: logger, conns: map[string]*grpc.ClientConn{},
		compressedSupport: newCompressedSupport(time.Now),
		metrics: replicationMetrics{
			quorumFailures: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
				Name: "strata_distributor_quorum_failures_total", Help: "Writes that did not reach a quorum of ingesters.",
			}, []string{"tenant"}),
			sent: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
				Name: "strata_distributor_ingester_appends_total", Help: "Writes sent to ingesters, by outcome.",
			}, []string{"ingester", "outcome"}),
			compressed: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
				Name: "strata_distributor_ingester_compressed_writes_total",
				Help: "Writes sent to ingesters as their client sent them, compressed (RemoteWriteCompressed), by result: sent, or unimplemented (an older ingester: sent as a RemoteWrite instead).",
			}, []string{"result"}),
		},
	}
}

// ShardKey is the ring token of a series of a tenant: xxhash over the tenant and the label pairs (in the order
// sent, which validation requires to be sorted), folded to 32 bits, so each series of each tenant has its own
// owners. A separator byte keeps "ab","c" and "a","bc" apart.
func ShardKey(tenant string, ls []*labelpb.Label) uint32 {
	var arr [1024]byte // most series fit: no allocation
	b := append(arr[:0], tenant...)
	b = append(b, 0xff)
	for _, l := range ls {
		b = append(b, l.GetName()...)
		b = append(b, 0xff)
		b = append(b, l.GetValue()...)
		b = append(b, 0xff)
	}
	sum := xxhash.Sum64(b)
	return uint32(sum) ^ uint32(sum>>32)
}

// ShardKeyRun is ShardKey of a series decoded without its labels, from its label run (remotewrite.LabelRuns):
// the same key as that of the labels decoded and validated unchanged.
func ShardKeyRun(tenant string, run []byte) (uint32, error) {
	var arr [1024]byte
	b := append(arr[:0], tenant...)
	b = append(b, 0xff)
	err := remotewrite.RangeLabelRun(run, func(name, value string) {
		b = append(b, name...)
		b = append(b, 0xff)
		b = append(b, value...)
		b = append(b, 0xff)
	})
	sum := xxhash.Sum64(b)
	return uint32(sum) ^ uint32(sum>>32), err
}

// takesRunLabels implements runLabelsPusher: series without labels are sent as their frames, their keys come
// from their runs, and an in-process ingester that is the only one (`strata all`) takes them with their runs
// (pushRuns, which appends a series it does not know by the labels of its run); any other in-process ingester is
// handed them with their labels decoded (push).
func (p *RingPusher) takesRunLabels() bool { return true }

// knownValid implements seriesKnower: while the ring's only ingester is in-process (`strata all`), it is asked
// which series it knows by their runs (Ingester.knownValid).
func (p *RingPusher) knownValid(tenant string, limits [3]int, runs [][]byte, known []bool) (lookedUp, bool) {
	local, _, ok := p.onlyLocalIngester(p.tenantRing(tenant))
	if !ok {
		return nil, false
	}
	k, ok := local.(seriesKnower)
	if !ok {
		return nil, false
	}
	return k.knownValid(tenant, limits, runs, known)
}

// isClientError: errors a retry cannot fix, which DoBatch must not count against the quorum as failures of
// an ingester.
func isClientError(err error) bool {
	var te *tenancy.Error
	if errors.As(err, &te) {
		return te.Status/100 == 4
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.FailedPrecondition, codes.AlreadyExists:
		return true
	}
	return false
}

// Push implements Pusher.
func (p *RingPusher) Push(ctx context.Context, tenant string, req *storepb.WriteRequest) error {
	return p.PushRelease(ctx, tenant, req, func() {})
}

// PushRelease implements ReleasingPusher: release is called once every send is done, those still running
// after the quorum answered included (or at once, when nothing is sent).
func (p *RingPusher) PushRelease(ctx context.Context, tenant string, req *storepb.WriteRequest, release func()) error {
	return p.push(ctx, tenant, req, nil, nil, nil, release)
}

// PushFrames implements FramingPusher: a series with a frame is sent to the ingesters as those bytes, and one with
// a label run is known by it to an in-process ingester that is the only one (`strata all`). When every
// ingester gets the whole request (wholeSet), compressed, the request as received, is what they are sent
// (RemoteWriteCompressed).
func (p *RingPusher) PushFrames(ctx context.Context, tenant string, req *storepb.WriteRequest, frames, runs [][]byte, compressed []byte, release func()) error {
	if len(frames) != len(req.GetTimeseries()) {
		frames = nil
	}
	if len(runs) != len(req.GetTimeseries()) {
		runs = nil
	}
	if len(req.GetMetadata()) > 0 {
		compressed = nil // a compressed write carries series only
	}
	return p.push(ctx, tenant, req, frames, runs, compressed, release)
}

// runsPusher is a Pusher that knows series by their label runs (an Ingester: seriesRefs).
type runsPusher interface {
	pushRuns(ctx context.Context, tenant string, req *storepb.WriteRequest, runs [][]byte) error
}

func (p *RingPusher) push(ctx context.Context, tenant string, req *storepb.WriteRequest, frames, runs [][]byte, compressed []byte, release func()) error {
	series, md := req.GetTimeseries(), req.GetMetadata()
	sent := false
	defer func() {
		if !sent {
			release()
		}
	}()
	if len(series)+len(md) == 0 {
		return nil
	}
	r := p.tenantRing(tenant)
	if r.InstancesCount() <= 0 {
		// As while the only ingesters restart: dskit would say "DoBatch: InstancesCount <= 0".
		p.metrics.quorumFailures.WithLabelValues(tenant).Inc()
		return status.Errorf(codes.Unavailable, "no ingester available for tenant %s: the ingester ring has no instance", tenant)
	}
	local, inst, onlyLocal := p.onlyLocalIngester(r)
	rp, byRuns := local.(runsPusher)
	if byRuns = byRuns && runs != nil; len(p.local) > 0 && (!onlyLocal || !byRuns) {
		// An in-process ingester is handed the decoded series: those decoded without their labels (known to
		// it while the ring had it alone: takesRunLabels) get them now.
		for k, ts := range series {
			if ts.Labels == nil && k < len(runs) && runs[k] != nil {
				if err := fillLabels(ts, runs[k]); err != nil {
					return status.Error(codes.Internal, err.Error())
				}
			}
		}
	}
	if onlyLocal {
		// `strata all`: every series goes to the one in-process ingester whatever its hash; no key to compute,
		// no batch to split. Synchronous, so released once it returns.
		sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
		wreq := &storepb.WriteRequest{Tenant: tenant, Timeseries: series, Metadata: md}
		var err error
		if byRuns {
			err = rp.pushRuns(sendCtx, tenant, wreq, runs)
		} else {
			err = local.Push(sendCtx, tenant, wreq)
		}
		cancel()
		p.observeLocal(tenant, inst, local)
		p.metrics.sent.WithLabelValues(inst, sendOutcome(err)).Inc()
		return p.pushError(tenant, err)
	}
	scratch := p.scratch.get()
	// batchRing is what DoBatch shards over: the (sub)ring, or, when every key has the same owners, that one
	// replication set with one key standing for every item (whole).
	var batchRing dskitring.DoBatchRing = r
	whole, ok := wholeReplicationSet(r)
	if ok {
		batchRing = whole
		scratch.keys = append(scratch.keys[:0], 0)
		scratch.all = scratch.all[:0]
		for i := range len(series) + len(md) {
			scratch.all = append(scratch.all, i)
		}
	} else {
		keys := scratch.keys[:0]
		for k, ts := range series {
			if ts.GetLabels() == nil && k < len(runs) && runs[k] != nil {
				key, err := ShardKeyRun(tenant, runs[k]) // decoded without its labels: known valid
				if err != nil {
					p.scratch.put(scratch)
					return status.Error(codes.Internal, err.Error())
				}
				keys = append(keys, key)
				continue
			}
			keys = append(keys, ShardKey(tenant, ts.GetLabels()))
		}
		keys = appendMetadataKeys(keys, tenant, md) // metadata.go: keys past len(series) are md's
		scratch.keys = keys
	}
	if whole.rf == 0 || len(p.local) > 0 {
		compressed = nil // sent as received only when every ingester gets the whole of it, over gRPC
	}
	// Every ingester is remote: encode now rather than on the first send, so that once Push returns (even on the
	// caller's cancellation, with replicas still sending) nothing reads req any more; unless each is sent the
	// request as received. (Which a replica may still turn out not to take, after Push returned: a compressed
	// request comes from PushFrames, whose caller keeps req until release.)
	if len(p.local) == 0 && (compressed == nil || !p.compressedSupport.allAnswered(whole.rs.Instances)) {
		if err := scratch.encodeOnce(series, md, frames); err != nil {
			p.scratch.put(scratch)
			return status.Error(codes.Internal, err.Error())
		}
	}
	// Replicas keep writing after the quorum answered and the HTTP request ended.
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	// DoBatch calls Cleanup once, after the last callback returned (or instead of them): only then is the
	// scratch, which remote sends read, free for another request.
	cleanup := func() {
		cancel()
		p.scratch.put(scratch)
		release()
	}
	sent = true // from here DoBatch calls cleanup, whatever happens
	err := dskitring.DoBatchWithOptions(ctx, dskitring.WriteNoExtend, batchRing, scratch.keys, func(inst dskitring.InstanceDesc, idx []int) error {
		if whole.rf > 0 {
			idx = scratch.all // the one key stands for every item
		}
		var err error
		if local, ok := p.local[inst.Addr]; ok {
			err = local.Push(sendCtx, tenant, subRequest(tenant, series, md, idx))
			p.observeLocal(tenant, inst.Id, local)
		} else {
			err = p.sendRemote(sendCtx, inst, tenant, scratch, series, md, frames, idx, compressed)
		}
		p.metrics.sent.WithLabelValues(inst.Id, sendOutcome(err)).Inc()
		return err
	}, dskitring.DoBatchOptions{Cleanup: cleanup, IsClientError: isClientError})
	return p.pushError(tenant, err)
}

// wholeSet is a DoBatchRing of one replication set, that of every key: a ring (or a tenant's shuffle shard) of
// no more instances than the replication factor, each of which owns every series. DoBatch then takes one item
// for the whole request, with the same quorum (the set's MaxErrors and zones) every item would have had, and
// each instance gets the whole request: no key to hash, no per-item tracking, no split.
type wholeSet struct {
	rs dskitring.ReplicationSet
	rf int
}

func (w wholeSet) Get(uint32, dskitring.Operation, []dskitring.InstanceDesc, []string, []string) (dskitring.ReplicationSet, error) {
	return w.rs, nil
}
func (w wholeSet) ReplicationFactor() int { return w.rf }
func (w wholeSet) InstancesCount() int    { return len(w.rs.Instances) }

// wholeReplicationSet returns r's replication set when it is the same for every key: r has no more instances
// than its replication factor, and the set of a key holds every one of them (so no zone had more instances than
// zone awareness takes from it, none was left out as unhealthy, joining or leaving). Otherwise false, and each
// series is sharded on its own. The set is the one DoBatch then uses: a ring changing meanwhile does not
// matter.
func wholeReplicationSet(r WriteRing) (wholeSet, bool) {
	n, rf := r.InstancesCount(), r.ReplicationFactor()
	if n <= 0 || n > rf {
		return wholeSet{}, false
	}
	rs, err := r.Get(0, dskitring.WriteNoExtend, nil, nil, nil)
	if err != nil || len(rs.Instances) != n {
		return wholeSet{}, false
	}
	return wholeSet{rs: rs, rf: rf}, true
}

// sendOutcome is the outcome label of strata_distributor_ingester_appends_total for a send's error.
func sendOutcome(err error) string {
	switch {
	case err == nil:
		return "success"
	case isClientError(err):
		return "rejected"
	}
	return "error"
}

// onlyLocalIngester returns r's only instance when there is one, healthy, and in-process (`strata all`).
func (p *RingPusher) onlyLocalIngester(r WriteRing) (Pusher, string, bool) {
	if len(p.local) != 1 || r.InstancesCount() != 1 {
		return nil, "", false
	}
	rs, err := r.GetAllHealthy(dskitring.WriteNoExtend)
	if err != nil || len(rs.Instances) != 1 {
		return nil, "", false
	}
	local, ok := p.local[rs.Instances[0].Addr]
	return local, rs.Instances[0].Id, ok
}

// pushError is Push's answer for the error of the sends (DoBatch's, or the only ingester's).
func (p *RingPusher) pushError(tenant string, err error) error {
	if err == nil {
		return nil
	}
	if isClientError(err) {
		return err
	}
	p.metrics.quorumFailures.WithLabelValues(tenant).Inc()
	level.Warn(p.logger).Log("msg", "write did not reach a quorum of ingesters", "tenant", tenant, "err", err)
	if errors.Is(err, dskitring.ErrEmptyRing) {
		return status.Errorf(codes.Unavailable, "no ingester available for tenant %s: %v", tenant, err)
	}
	return status.Errorf(codes.Unavailable, "write to ingesters: %v", err)
}

// subRequest is the write of the items at idx for an in-process ingester: series past len(series) are md's.
func subRequest(tenant string, series []*prompb.TimeSeries, md []*prompb.MetricMetadata, idx []int) *storepb.WriteRequest {
	sub := &storepb.WriteRequest{Tenant: tenant}
	n := 0
	for _, i := range idx {
		if i < len(series) {
			n++
		}
	}
	if n > 0 {
		sub.Timeseries = make([]*prompb.TimeSeries, 0, n)
	}
	if len(idx) > n {
		sub.Metadata = make([]*prompb.MetricMetadata, 0, len(idx)-n)
	}
	for _, i := range idx {
		if i >= len(series) {
			sub.Metadata = append(sub.Metadata, md[i-len(series)])
			continue
		}
		sub.Timeseries = append(sub.Timeseries, series[i])
	}
	return sub
}

// sendRemote writes the items at idx to a remote ingester: the request as received when compressed is not nil
// and the ingester takes it (RemoteWriteCompressed), else a RemoteWrite whose message is copied out of the
// request's frames, encoded on the first remote send (see forwardScratch).
func (p *RingPusher) sendRemote(ctx context.Context, inst dskitring.InstanceDesc, tenant string, scratch *forwardScratch, series []*prompb.TimeSeries,
	md []*prompb.MetricMetadata, frames [][]byte, idx []int, compressed []byte) error {
	conn, err := p.conn(inst.Addr)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	if compressed != nil && p.compressedSupport.use(inst.Addr) {
		if handled, err := p.sendCompressed(ctx, conn, inst, tenant, compressed); handled {
			return err
		}
	}
	if err := scratch.encodeOnce(series, md, frames); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	// gRPC's codec copies the message into its own buffer within Invoke, so once every Invoke of the request
	// returned the scratch can be reused.
	var hdr metadata.MD // the ingester's report of the tenant's usage (limit_usage.go)
	err = conn.Invoke(tenancy.OutgoingContext(ctx, tenant), storepb.WriteableStore_RemoteWrite_FullMethodName,
		newEncodedWrite(scratch, len(series), idx, tenant), new(storepb.WriteResponse), grpc.Header(&hdr))
	p.observeRemote(tenant, inst.Id, hdr)
	return err
}

// writeDialOptions are the write path's connections to ingesters: each request sends a megabyte or more, which
// gRPC's 32 KiB write buffer turned into dozens of write syscalls (the ingesters' windows are large enough to take
// it at once, see server.GRPCTransportOptions).
var writeDialOptions = []grpc.DialOption{grpc.WithWriteBufferSize(256 << 10)}

// conn returns the (lazily connecting, shared) connection to an ingester.
func (p *RingPusher) conn(addr string) (*grpc.ClientConn, error) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, append(append(store.DialOptions(), writeDialOptions...), p.dialOpts...)...)
	if err != nil {
		return nil, errors.Wrapf(err, "dial ingester %s", addr)
	}
	p.conns[addr] = c
	return c, nil
}

// WithDialOptions adds opts (TLS, the cluster secret) to the connections to the ingesters. Call it before use.
func (p *RingPusher) WithDialOptions(opts ...grpc.DialOption) *RingPusher {
	p.dialOpts = opts
	return p
}

// Close closes the connections to the ingesters.
func (p *RingPusher) Close() error {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	for addr, c := range p.conns {
		_ = c.Close()
		delete(p.conns, addr)
	}
	return nil
}
