package receive

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/grafana/dskit/limiter"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Pusher takes the validated series of one tenant's remote write request: the ring-replicating client in a
// distributor, an ingester in a single process.
//
// Contract: req.Tenant is tenant; every series passed validation (labels sorted, unique, legacy names, a
// metric name, within the tenant's limits, no sample too far in the future) and has at least one sample,
// histogram or exemplar; req.Metadata holds the request's valid metric metadata (metadata.go), and a request may
// carry metadata only. The Distributor neither touches nor reuses req after Push returns, so a Pusher may go on
// using it (replicas still sending after a quorum answered), but must not modify it. Its messages are carved
// out of a few per-request slabs, and the strings of a remote write's series alias its decompressed body: a
// ReleasingPusher must copy whatever it keeps beyond its release (the memory is then reused), and for any other
// Pusher keeping a string keeps the whole body, keeping a message its slab.
//
// The error decides the HTTP answer: a *tenancy.Error answers with its Status; a gRPC status InvalidArgument
// 400, ResourceExhausted 429; anything else (unavailable, no quorum, deadline) 503, which Prometheus retries.
// Push must be safe for concurrent use.
type Pusher interface {
	Push(ctx context.Context, tenant string, req *storepb.WriteRequest) error
}

// PushConfig configures the remote write endpoint.
type PushConfig struct {
	// MaxRecvMsgSize is the largest request body accepted, in bytes, both as received (snappy-compressed) and
	// decompressed. Larger requests are answered 413.
	MaxRecvMsgSize int `yaml:"max_recv_msg_size"`
	// InstanceLimits bound what this distributor handles at once, over all tenants (Mimir's
	// distributor.instance_limits).
	InstanceLimits InstanceLimits `yaml:"instance_limits"`
	// InstanceID is this distributor's ID in the distributor ring (default: the hostname).
	InstanceID string `yaml:"instance_id"`
	// RemoteTimeout bounds one write to one ingester.
	RemoteTimeout time.Duration `yaml:"remote_timeout"`
	// HATracker deduplicates HA pairs of Prometheus servers (hatracker.go).
	HATracker HATrackerConfig `yaml:"ha_tracker"`
	// ValidatedSeriesCacheSize is how many series, over all tenants, the distributor remembers as having valid
	// labels, so as not to check them again (validSeries); 0 checks every series. Unused with an in-process
	// ingester (`strata all`), which knows its series itself.
	ValidatedSeriesCacheSize int `yaml:"validated_series_cache_size"`
}

// InstanceLimits are a distributor's limits over all tenants; beyond them requests are answered 503, which
// Prometheus retries. 0 means no limit.
type InstanceLimits struct {
	// MaxInflightPushRequests is how many push requests may be handled at once.
	MaxInflightPushRequests int `yaml:"max_inflight_push_requests"`
	// MaxInflightPushRequestsBytes is how much memory the push requests being handled may hold: each holds its
	// body as received, decompressed, and what it decodes into (estimated before decoding; at most
	// 24× (1.0) or 48× (2.0) the decompressed size, see maxDecodeRatioV1), from the moment it is known until the
	// answer. Unlike Mimir's, which counts compressed bodies only, it bounds the memory of decoding.
	MaxInflightPushRequestsBytes int `yaml:"max_inflight_push_requests_bytes"`
}

// DefaultPushConfig accepts bodies up to 10 MiB, 2,000 requests at once (Mimir's default) holding at most
// 1 GiB (Mimir has no default: 0). 1 GiB lets two requests of the largest kind (10 MiB of 2.0 decoding into
// ~480 MiB) or hundreds of ordinary ones (a few MiB each) be handled at once.
func DefaultPushConfig() PushConfig {
	return PushConfig{
		MaxRecvMsgSize: 10 << 20,
		InstanceID:     ring.DefaultInstanceID(),
		RemoteTimeout:  5 * time.Second,
		InstanceLimits: InstanceLimits{MaxInflightPushRequests: 2000, MaxInflightPushRequestsBytes: 1 << 30},
		HATracker:      DefaultHATrackerConfig(),

		ValidatedSeriesCacheSize: 1 << 20,
	}
}

// Validate checks the push config.
func (c PushConfig) Validate() error {
	if c.MaxRecvMsgSize <= 0 {
		return errors.Newf("max_recv_msg_size must be positive, got %d", c.MaxRecvMsgSize)
	}
	if c.InstanceLimits.MaxInflightPushRequests < 0 {
		return errors.Newf("instance_limits.max_inflight_push_requests must be 0 (no limit) or positive, got %d", c.InstanceLimits.MaxInflightPushRequests)
	}
	if c.InstanceLimits.MaxInflightPushRequestsBytes < 0 {
		return errors.Newf("instance_limits.max_inflight_push_requests_bytes must be 0 (no limit) or positive, got %d", c.InstanceLimits.MaxInflightPushRequestsBytes)
	}
	if c.ValidatedSeriesCacheSize < 0 {
		return errors.Newf("validated_series_cache_size must be 0 (none) or positive, got %d", c.ValidatedSeriesCacheSize)
	}
	if c.HATracker.EnableHATracker {
		return c.HATracker.Validate()
	}
	return nil
}

// errInflightLimit marks a request refused by an instance limit (503).
var errInflightLimit = errors.New("instance limit reached")

// inflight counts the push requests being handled and the bytes they hold. It is safe for concurrent use.
type inflight struct {
	maxRequests, maxBytes int64
	requests, bytes       atomic.Int64
	// who and key name the component and its limits' config block in errors.
	who, key string
}

// start counts one more request, unless that would exceed max_inflight_push_requests. Call done when it ends.
func (l *inflight) start() error {
	if n := l.requests.Add(1); l.maxRequests > 0 && n > l.maxRequests {
		l.requests.Add(-1)
		return errors.Wrapf(errInflightLimit, "this %s is already handling %d push requests (%s.max_inflight_push_requests); retry later", l.who, l.maxRequests, l.key)
	}
	return nil
}

func (l *inflight) done() { l.requests.Add(-1) }

// reservation is the bytes one request holds.
type reservation struct {
	l *inflight
	n int64
}

// reserve adds n bytes to the request's, unless the total would exceed max_inflight_push_requests_bytes.
func (r *reservation) reserve(n int) error {
	if t := r.l.bytes.Add(int64(n)); r.l.maxBytes > 0 && t > r.l.maxBytes {
		r.l.bytes.Add(-int64(n))
		return errors.Wrapf(errInflightLimit, "the push requests this %s is handling would hold more than %d bytes with this one's %d more (%s.max_inflight_push_requests_bytes); retry later",
			r.l.who, r.l.maxBytes, n, r.l.key)
	}
	r.n += int64(n)
	return nil
}

// end gives back everything the request reserved, and ends its count (nothing for a request never started: l
// nil).
func (r *reservation) end() {
	if r.l == nil {
		return
	}
	r.l.bytes.Add(-r.n)
	r.n = 0
	r.l.done()
}

// PushOption configures optional parts of the Distributor.
type PushOption func(*pushOptions)

type pushOptions struct {
	now          func() time.Time
	distributors func() int
	discarded    *DiscardedSamples
	ha           *HATracker
}

// WithClock sets the clock used for "too far in the future" and the rate limiter (default time.Now).
func WithClock(now func() time.Time) PushOption { return func(o *pushOptions) { o.now = now } }

// WithDistributorCount sets how many distributors share each tenant's ingestion_rate (default 1). It is called
// for every request; with a ring, pass its healthy distributor count.
func WithDistributorCount(n func() int) PushOption {
	return func(o *pushOptions) { o.distributors = n }
}

// WithDiscardedSamples sets the process's strata_discarded_samples_total, shared with the ingester. Without it
// the Distributor registers its own on reg.
func WithDiscardedSamples(d *DiscardedSamples) PushOption {
	return func(o *pushOptions) { o.discarded = d }
}

// WithHATracker deduplicates HA pairs with t (default: none, as with the tracker disabled).
func WithHATracker(t *HATracker) PushOption { return func(o *pushOptions) { o.ha = t } }

// Distributor is the write path: the one pipeline every protocol's handler (remote write 1.0 and 2.0 over HTTP,
// push.go) hands its decoded requests to. Push validates, applies the tenant's limits, and hands the valid series
// to its Pusher, which shards and replicates them to the ingesters (RingPusher) or appends them (an Ingester in
// a single process). It also holds the instance limits (in-flight requests and bytes), which a handler takes
// before reading a body (start). It is safe for concurrent use.
type Distributor struct {
	cfg       PushConfig
	overrides *tenancy.Overrides
	pusher    Pusher
	logger    log.Logger
	now       func() time.Time
	limiter   *limiter.RateLimiter
	discarded *DiscardedSamples
	metrics   *pushMetrics
	metadata  *metadataReceiver // metric metadata (metadata.go)
	inflight  *inflight
	usage     *limitUsage  // tenants' usage of their limits (limit_usage.go)
	ha        *HATracker   // nil: the HA tracker is disabled
	valid     *validSeries // nil: every series' labels are checked
}

// NewDistributor returns a Distributor handing valid series to pusher.
func NewDistributor(cfg PushConfig, overrides *tenancy.Overrides, pusher Pusher, logger log.Logger, reg prometheus.Registerer, opts ...PushOption) *Distributor {
	o := pushOptions{now: time.Now, distributors: func() int { return 1 }}
	for _, opt := range opts {
		opt(&o)
	}
	if o.discarded == nil {
		o.discarded = NewDiscardedSamples(reg)
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	l := &inflight{maxRequests: int64(cfg.InstanceLimits.MaxInflightPushRequests), maxBytes: int64(cfg.InstanceLimits.MaxInflightPushRequestsBytes),
		who: "distributor", key: "instance_limits"}
	usage := newLimitUsage(overrides, o.now, o.distributors, log.With(logger, "component", "push"), reg)
	if r, ok := pusher.(usageReporter); ok {
		r.reportUsageTo(usage)
	}
	return &Distributor{
		cfg:       cfg,
		overrides: overrides,
		pusher:    pusher,
		logger:    log.With(logger, "component", "push"),
		now:       o.now,
		limiter:   newIngestionRateLimiter(overrides, o.distributors),
		discarded: o.discarded,
		metrics:   newPushMetrics(reg, l),
		metadata:  newMetadataReceiver(overrides, reg),
		inflight:  l,
		usage:     usage,
		ha:        o.ha,
		valid:     newValidSeries(cfg.ValidatedSeriesCacheSize, reg),
	}
}

// start counts a request against max_inflight_push_requests (errInflightLimit beyond it). The request then
// reserves the memory it holds (reading and decoding its body) on the returned reservation, and ends it when
// answered.
func (d *Distributor) start() (reservation, error) {
	if err := d.inflight.start(); err != nil {
		d.metrics.rejectedInflight.Inc()
		return reservation{}, err
	}
	return reservation{l: d.inflight}, nil
}

// PushRequest is one tenant's decoded write request, as a protocol handler hands it to Distributor.Push.
type PushRequest struct {
	// Series are the decoded series (nil entries are skipped). Push reorders the slice and clears the entries
	// it does not pass on.
	Series []*prompb.TimeSeries
	// Metadata is the request's valid metric metadata; MetadataErr the first invalid entry's error (the
	// invalid entries were dropped and counted while decoding).
	Metadata    []*prompb.MetricMetadata
	MetadataErr *tenancy.Error
	// LabelCount, when not nil, tells how many labels a series decoded with only its first labels has (see
	// decodeOptions.maxLabels), for the error that refuses it.
	LabelCount func(*prompb.TimeSeries) (int, bool)
	// Frames, when not nil, are the series' fields of the request as received (remotewrite.Options.KeepFrames),
	// Frames[i] Series[i]'s, or nil: a series Push leaves unchanged is forwarded as those bytes, not marshalled
	// again. Push reorders and clears it along with Series.
	Frames [][]byte
	// LabelRuns, when not nil, are the series' labels as received (remotewrite.Options.KeepLabelRuns),
	// LabelRuns[i] Series[i]'s, or nil: a series Push leaves unchanged keeps its run, which an in-process
	// ingester recognizes it by (seriesRefs). Push reorders and clears it along with Series.
	LabelRuns [][]byte
	// Compressed, when not nil, is the request as received (a snappy-compressed remote write 1.0 request, with
	// Frames): when Push leaves every series of it as it was and it has no metadata, a FramingPusher may forward
	// these bytes instead (RemoteWriteCompressed). Valid until Release.
	Compressed []byte
	// Release, when not nil, is called once nothing refers to Series any more, so that the handler may reuse
	// the memory they were decoded into. Push calls it when its Pusher is a ReleasingPusher (which says when
	// it is done), and never otherwise: a Pusher may go on using a request after Push returns.
	Release func()

	// known, when not nil, is what the distributor's validSeries knew of the series, looked up while they were
	// decoded (the push handler's SkipLabels) under the label limits knownLimits: the series it knew were decoded
	// without their labels (Labels nil; LabelRuns has their runs).
	known       *validLookup
	knownLimits [3]int
}

// skipKnownLabels reports whether the push handler may decode a request of a tenant of limits without the labels
// of the series the distributor knows valid: it remembers series (validSeries), the tenant's series are not
// relabelled (HA deduplication), and the Pusher takes series without labels when it has their runs (its
// ingesters are all remote: each is sent the series' bytes, and a series' ring token comes from its run).
func (d *Distributor) skipKnownLabels(limits *tenancy.Limits) bool {
	rp, ok := d.pusher.(runLabelsPusher)
	_, knower := d.pusher.(seriesKnower)
	return (d.valid != nil || knower) && !limits.AcceptHASamples && ok && rp.takesRunLabels()
}

// lookupKnown returns which series of runs (of a tenant, validated under limits) are known valid: to the
// distributor's validSeries, or, without it, to its Pusher (a seriesKnower: `strata all`'s ingester). nil: none.
func (d *Distributor) lookupKnown(tenant string, limits [3]int, runs [][]byte) *validLookup {
	if d.valid != nil {
		return d.valid.lookup(tenant, limits, runs)
	}
	sk, ok := d.pusher.(seriesKnower)
	if !ok || len(runs) == 0 {
		return nil
	}
	l := &validLookup{known: make([]bool, len(runs))}
	looked, ok := sk.knownValid(tenant, limits, runs, l.known)
	if !ok {
		return nil
	}
	l.looked = looked
	return l
}

// seriesKnower is a Pusher that knows, by their label runs, series the distributor validated unchanged before
// (a RingPusher whose only ingester is in-process, its seriesRefs: see Ingester.knownValid). knownValid sets
// known[k] for those of runs, and reports false when it cannot tell; looked, when not nil, is the lookup itself,
// which Push hands back to the Pusher with the series it passes on (withLookedUp), so that they are not looked up
// twice.
type seriesKnower interface {
	knownValid(tenant string, limits [3]int, runs [][]byte, known []bool) (looked lookedUp, ok bool)
}

// lookedUp is what a seriesKnower looked a request's series up as, one entry per series; Push keeps it in the
// order of the series it passes on: keep(from, to) moves series from's entry to to (to ≤ from), truncate(n)
// keeps the first n.
type lookedUp interface {
	keep(from, to int)
	truncate(n int)
}

// lookedUpKey is the context key of a *lookedUpHandOver.
type lookedUpKey struct{}

// lookedUpHandOver carries a lookedUp from Push to the Pusher, to be taken once.
type lookedUpHandOver struct {
	mtx sync.Mutex
	l   lookedUp
}

// withLookedUp returns ctx carrying l for the Pusher (takeLookedUp).
func withLookedUp(ctx context.Context, l lookedUp) context.Context {
	return context.WithValue(ctx, lookedUpKey{}, &lookedUpHandOver{l: l})
}

// takeLookedUp returns the lookedUp ctx carries, once (nil afterwards, and when it carries none).
func takeLookedUp(ctx context.Context) lookedUp {
	h, ok := ctx.Value(lookedUpKey{}).(*lookedUpHandOver)
	if !ok {
		return nil
	}
	h.mtx.Lock()
	defer h.mtx.Unlock()
	l := h.l
	h.l = nil
	return l
}

// runLabelsPusher is a FramingPusher that may take series without their labels (nil) when it has their label runs.
type runLabelsPusher interface {
	takesRunLabels() bool
}

// fillLabels decodes the labels of a series decoded without them (PushRequest.known) from its run.
func fillLabels(ts *prompb.TimeSeries, run []byte) error {
	if ts.Labels != nil {
		return nil
	}
	if run == nil {
		return errors.New("a series decoded without its labels has no label run")
	}
	ls, err := remotewrite.DecodeLabelRun(run)
	if err != nil {
		return err
	}
	ts.Labels = ls
	return nil
}

// FramingPusher is a ReleasingPusher that forwards series as the bytes they were received as (frames[i] is
// req.Timeseries[i]'s, or nil).
type FramingPusher interface {
	ReleasingPusher
	// runs, when not nil, are the series' label runs (PushRequest.LabelRuns); compressed, when not nil, is req as
	// received, every series unchanged and no metadata (PushRequest.Compressed).
	PushFrames(ctx context.Context, tenant string, req *storepb.WriteRequest, frames, runs [][]byte, compressed []byte, release func()) error
}

// ReleasingPusher is a Pusher that says when it is done with a request: it calls release once, when nothing
// reads req any more (which may be after PushRelease returns: replicas still sending after a quorum answered).
type ReleasingPusher interface {
	Pusher
	PushRelease(ctx context.Context, tenant string, req *storepb.WriteRequest, release func()) error
}

// PushStats are what a push wrote (Prometheus's 2.0 receiver reports them in response headers).
type PushStats struct {
	Samples, Histograms, Exemplars int
	// LimitWarning is the X-Strata-Limit-Warning of the answer ("" below the tenant's limits_warning_ratio).
	LimitWarning string
}

// Push runs the write pipeline on one tenant's request:
//   - for a tenant with accept_ha_samples, the HA tracker's deduplication (hatracker.go): a request from a
//     replica that is not its cluster's elected one is dropped (a 202 error), the replica label removed otherwise;
//   - validate each series against the tenant's limits (sorting labels that are not sorted), dropping and
//     counting the invalid ones;
//   - take the valid series' samples, histograms and exemplars and the metadata from the tenant's token bucket
//     (a 429 *tenancy.Error for the whole request when they do not fit);
//   - hand the valid series to the Pusher, which shards them by series and replicates them to the ingesters.
//
// It returns what was written, and: nil when all was valid; the first invalid series' (or metadata entry's)
// *tenancy.Error when some were not (the valid ones are written: Mimir's partial acceptance); or the Pusher's
// error (see Pusher), with zero stats.
func (d *Distributor) Push(ctx context.Context, tenant string, req *PushRequest) (PushStats, error) {
	release := req.Release
	if release == nil {
		release = func() {}
	}
	stats, pushed, err := d.push(ctx, tenant, req, release)
	if !pushed {
		release()
	}
	return stats, err
}

// push is Push; pushed says whether the series went to the Pusher, which then owns them (and release).
func (d *Distributor) push(ctx context.Context, tenant string, req *PushRequest, release func()) (PushStats, bool, error) {
	limits := d.overrides.ForTenant(tenant)
	frames, runs := req.Frames, req.LabelRuns
	if frames != nil && len(frames) != len(req.Series) {
		frames = nil
	}
	if frames == nil || len(runs) != len(req.Series) {
		runs = nil
	}
	// The body as received stands for the request only while every series passes as it came.
	compressed := req.Compressed
	if frames == nil {
		compressed = nil
	}
	known := req.known
	if known != nil && (runs == nil || limits.AcceptHASamples ||
		req.knownLimits != newSeriesValidator(limits, time.Time{}).labelLimits()) {
		// The tenant's limits changed since the request was decoded: every series is looked at with its labels.
		for k, ts := range req.Series {
			if ts != nil && known.isKnown(k) {
				var run []byte
				if k < len(req.LabelRuns) {
					run = req.LabelRuns[k]
				}
				if err := fillLabels(ts, run); err != nil {
					d.valid.done(known)
					return PushStats{}, false, status.Error(codes.Internal, err.Error())
				}
			}
		}
		d.valid.done(known)
		known = nil
	}
	if limits.AcceptHASamples {
		frames, runs = nil, nil // the replica label is removed from the series, not from their bytes
		// Before validation and the rate limit, as in Mimir: dropped samples take no tokens, and the replica
		// label does not count against max_label_names_per_series.
		if err := d.haDedup(ctx, tenant, limits, req.Series); err != nil {
			return PushStats{}, false, err
		}
	}
	now := d.now()
	v := newSeriesValidator(limits, now)
	var (
		firstErr  *tenancy.Error
		discarded discardCounts
		stats     PushStats
		series    = req.Series
		valid     = series[:0]
	)
	if known == nil {
		known = d.lookupKnown(tenant, v.labelLimits(), runs)
	}
	defer d.valid.done(known)
	for i, ts := range series {
		if ts == nil {
			continue
		}
		var vi violation
		if known.isKnown(i) {
			vi = v.checkSamples(ts)
			if vi.reason != "" || vi.changed {
				// Its labels are needed after all: for the error, or to send it other than as received.
				if err := fillLabels(ts, runs[i]); err != nil {
					return PushStats{}, false, status.Error(codes.Internal, err.Error())
				}
			}
		} else {
			vi = v.check(ts)
			if known != nil && vi.reason == "" && !vi.labelsChanged {
				known.found(i, runs[i])
			}
		}
		if vi.reason != "" {
			discarded.add(vi.reason, len(ts.Samples)+len(ts.Histograms))
			if firstErr == nil {
				firstErr = v.err(ts, vi)
				if req.LabelCount != nil && vi.reason == ReasonMaxLabelNamesPerSeries {
					if n, ok := req.LabelCount(ts); ok {
						// Decoded with its first labels only: say how many it has.
						firstErr = tenancy.NewMaxLabelNamesPerSeriesError(n, v.maxLabelNames, formatSeries(ts.Labels))
					}
				}
			}
			continue
		}
		if len(ts.Samples)+len(ts.Histograms)+len(ts.Exemplars) == 0 {
			compressed = nil
			continue // nothing to write
		}
		stats.Samples += len(ts.Samples)
		stats.Histograms += len(ts.Histograms)
		stats.Exemplars += len(ts.Exemplars)
		if frames != nil {
			frame := frames[i]
			if vi.changed {
				frame = nil
			}
			if frame == nil {
				compressed = nil // decoded other than received (an empty label dropped), or changed
			}
			frames[len(valid)] = frame // i ≥ len(valid): not read again
		}
		if runs != nil {
			run := runs[i]
			if vi.labelsChanged {
				run = nil
			}
			runs[len(valid)] = run
		}
		if known != nil && known.looked != nil {
			known.looked.keep(i, len(valid))
		}
		valid = append(valid, ts)
	}
	if known != nil && known.looked != nil {
		known.looked.truncate(len(valid))
		if runs != nil {
			ctx = withLookedUp(ctx, known.looked)
		}
	}
	clear(series[len(valid):])
	if frames != nil {
		clear(frames[len(valid):])
		frames = frames[:len(valid)]
	}
	if runs != nil {
		clear(runs[len(valid):])
		runs = runs[:len(valid)]
	}
	for _, c := range discarded {
		d.discarded.Add(tenant, c.reason, c.n)
	}
	if firstErr != nil {
		level.Debug(d.logger).Log("msg", "dropping invalid series", "tenant", tenant, "discarded_series", discarded.series(), "first", firstErr)
	}
	if firstErr == nil {
		firstErr = req.MetadataErr
	}
	md := req.Metadata
	if len(md) > 0 || req.MetadataErr != nil || len(valid) != len(series) {
		compressed = nil // a compressed write carries series only
	}
	if len(valid) == 0 && len(md) == 0 {
		if firstErr != nil {
			return PushStats{}, false, firstErr
		}
		return PushStats{}, false, nil
	}

	usage := d.usage.tenant(tenant, now)
	n := stats.Samples + stats.Histograms + stats.Exemplars + len(md)
	allowed := d.limiter.AllowN(now, tenant, n)
	usage.record(now, n, allowed)
	if !allowed {
		d.discarded.Add(tenant, ReasonRateLimited, stats.Samples+stats.Histograms)
		d.metadata.discarded.Add(tenant, ReasonRateLimited, len(md))
		return PushStats{}, false, tenancy.NewIngestionRateLimitedError(limits.IngestionRate, limits.IngestionBurstSize, d.usage.receivedRate(usage, now))
	}

	wreq := &storepb.WriteRequest{Timeseries: valid, Tenant: tenant, Metadata: md}
	var err error
	if fp, ok := d.pusher.(FramingPusher); ok && frames != nil {
		err = fp.PushFrames(ctx, tenant, wreq, frames, runs, compressed, release)
	} else if rp, ok := d.pusher.(ReleasingPusher); ok {
		err = rp.PushRelease(ctx, tenant, wreq, release)
	} else {
		err = d.pusher.Push(ctx, tenant, wreq) // never released: the Pusher may go on using the request
	}
	if err != nil {
		return PushStats{}, true, err
	}
	d.metrics.receivedSamples.WithLabelValues(tenant).Add(float64(stats.Samples + stats.Histograms))
	if lu, ok := d.pusher.(localUsage); ok {
		if su, ok := lu.seriesUsage(tenant); ok { // an Ingester as the Pusher (tests, single process)
			d.usage.observe(tenant, "local", su)
		}
	}
	stats.LimitWarning = d.usage.warning(usage, tenant, limits, now)
	if firstErr != nil {
		return stats, true, firstErr
	}
	return stats, true, nil
}

// discardCount is what one request discarded for one reason.
type discardCount struct {
	reason string
	n      int // samples and histograms
	series int
}

// discardCounts sums discarded samples per reason over one request (a handful of reasons: a slice beats a map).
type discardCounts []discardCount

func (d *discardCounts) add(reason string, n int) {
	for i := range *d {
		if (*d)[i].reason == reason {
			(*d)[i].n += n
			(*d)[i].series++
			return
		}
	}
	*d = append(*d, discardCount{reason: reason, n: n, series: 1})
}

func (d discardCounts) series() int {
	total := 0
	for _, c := range d {
		total += c.series
	}
	return total
}
