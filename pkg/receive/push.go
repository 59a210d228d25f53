package receive

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/grafana/dskit/limiter"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Pusher takes the validated series of one tenant's remote write request: the ring-replicating client in a
// distributor, an ingester in a single process.
//
// Contract: req.Tenant is tenant; every series passed validation (labels sorted, unique, legacy names, a
// metric name, within the tenant's limits, no sample too far in the future) and has at least one sample,
// histogram or exemplar; req.Metadata holds the request's valid metric metadata (metadata.go), and a request may
// carry metadata only. The handler neither touches nor reuses req after Push returns, so a Pusher may go on
// using it (replicas still sending after a quorum answered), but must not modify it. Its messages are carved
// out of a few per-request slabs, and strings share allocations of a few KiB (consecutive series): keeping a
// string keeps such a window of the request, keeping a message keeps its slab.
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
		InstanceLimits: InstanceLimits{MaxInflightPushRequests: 2000, MaxInflightPushRequestsBytes: 1 << 30},
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
	return nil
}

// errInflightLimit marks a request refused by an instance limit (503).
var errInflightLimit = errors.New("distributor instance limit reached")

// inflight counts the push requests being handled and the bytes they hold. It is safe for concurrent use.
type inflight struct {
	maxRequests, maxBytes int64
	requests, bytes       atomic.Int64
}

// start counts one more request, unless that would exceed max_inflight_push_requests. Call done when it ends.
func (l *inflight) start() error {
	if n := l.requests.Add(1); l.maxRequests > 0 && n > l.maxRequests {
		l.requests.Add(-1)
		return errors.Wrapf(errInflightLimit, "this distributor is already handling %d push requests (instance_limits.max_inflight_push_requests); retry later", l.maxRequests)
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
		return errors.Wrapf(errInflightLimit, "the push requests this distributor is handling would hold more than %d bytes with this one's %d more (instance_limits.max_inflight_push_requests_bytes); retry later",
			r.l.maxBytes, n)
	}
	r.n += int64(n)
	return nil
}

// release gives back everything the request reserved.
func (r *reservation) release() {
	r.l.bytes.Add(-r.n)
	r.n = 0
}

// PushOption configures optional parts of the push handler.
type PushOption func(*pushOptions)

type pushOptions struct {
	now          func() time.Time
	distributors func() int
	discarded    *DiscardedSamples
}

// WithClock sets the clock used for "too far in the future" and the rate limiter (default time.Now).
func WithClock(now func() time.Time) PushOption { return func(o *pushOptions) { o.now = now } }

// WithDistributorCount sets how many distributors share each tenant's ingestion_rate (default 1). It is called
// for every request; with a ring, pass its healthy distributor count.
func WithDistributorCount(n func() int) PushOption {
	return func(o *pushOptions) { o.distributors = n }
}

// WithDiscardedSamples sets the process's strata_discarded_samples_total, shared with the ingester. Without it
// the handler registers its own on reg.
func WithDiscardedSamples(d *DiscardedSamples) PushOption {
	return func(o *pushOptions) { o.discarded = d }
}

// pushHandler is the distributor's remote write endpoint (POST /api/v1/push, /api/v1/receive).
type pushHandler struct {
	overrides *tenancy.Overrides
	pusher    Pusher
	logger    log.Logger
	now       func() time.Time
	body      *snappyBodyReader
	limiter   *limiter.RateLimiter
	discarded *DiscardedSamples
	metrics   *pushMetrics
	metadata  *metadataReceiver // metric metadata (metadata.go)
	inflight  *inflight
}

// NewPushHandler returns the remote write handler (1.0 and 2.0). It must be mounted behind
// tenancy.Config.HTTPMiddleware(false), which puts the validated tenant in the request's context. For each
// request it: checks the body's size (413), Content-Type (415) and Content-Encoding (415); counts it against
// cfg.InstanceLimits (503 beyond); decompresses and decodes it (400 when malformed, when it looks like the
// other protocol than its Content-Type, or when it would decode into more memory than its size justifies,
// see maxDecodeRatioV1); validates each series against the tenant's limits (sorting labels that are not
// sorted), dropping and counting
// the invalid ones; takes the valid series' samples, histograms and exemplars from the tenant's token bucket
// (429 for the whole request when they do not fit); hands the valid series to pusher; and answers 204 when all
// series were valid, 400 with the first invalid series' error when some were not (the valid ones are written:
// Mimir's partial acceptance), or pusher's error (see Pusher). The handler is safe for concurrent use.
func NewPushHandler(cfg PushConfig, overrides *tenancy.Overrides, pusher Pusher, logger log.Logger, reg prometheus.Registerer, opts ...PushOption) http.Handler {
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
	l := &inflight{maxRequests: int64(cfg.InstanceLimits.MaxInflightPushRequests), maxBytes: int64(cfg.InstanceLimits.MaxInflightPushRequestsBytes)}
	return &pushHandler{
		overrides: overrides,
		pusher:    pusher,
		logger:    log.With(logger, "component", "push"),
		now:       o.now,
		body:      newSnappyBodyReader(cfg.MaxRecvMsgSize),
		limiter:   newIngestionRateLimiter(overrides, o.distributors),
		discarded: o.discarded,
		metrics:   newPushMetrics(reg, l),
		metadata:  newMetadataReceiver(overrides, reg),
		inflight:  l,
	}
}

// writeStats are the written counts Prometheus's 2.0 receiver reports in response headers.
type writeStats struct{ samples, histograms, exemplars int }

// The 2.0 spec's response headers (as set by Prometheus's receiver, client_golang exp/api/remote).
const (
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// pushResult is the answer to one request: status, message for errors, and for 2.0 the written counts.
type pushResult struct {
	code    int
	msg     string
	proto   writeProto // 0 until the Content-Type is known
	written writeStats
}

func (h *pushHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	res := h.push(r)
	if res.proto == writeV2 {
		// Prometheus's 2.0 receiver sets them on every answer once the message type is known; a sender reads
		// a missing header as 0 written.
		hd := w.Header()
		hd.Set(headerSamplesWritten, strconv.Itoa(res.written.samples))
		hd.Set(headerHistogramsWritten, strconv.Itoa(res.written.histograms))
		hd.Set(headerExemplarsWritten, strconv.Itoa(res.written.exemplars))
	}
	if res.code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if res.code >= 400 {
		http.Error(w, res.msg, res.code)
	} else {
		w.WriteHeader(res.code)
	}
	h.metrics.observeStatus(res.code)
}

// push handles one request; see NewPushHandler for the steps.
func (h *pushHandler) push(r *http.Request) pushResult {
	if r.Method != http.MethodPost {
		return pushResult{code: http.StatusMethodNotAllowed, msg: "remote write requires POST, got " + r.Method}
	}
	tenant, err := tenancy.TenantFromContext(r.Context())
	if err != nil {
		return pushResult{code: tenancy.HTTPStatus(err), msg: err.Error()}
	}
	proto, err := parseWriteContentType(r.Header.Get("Content-Type"))
	if err != nil {
		return pushResult{code: http.StatusUnsupportedMediaType, msg: err.Error()}
	}
	res := pushResult{proto: proto}
	if err := checkContentEncoding(r.Header.Get("Content-Encoding")); err != nil {
		return res.fail(http.StatusUnsupportedMediaType, err.Error())
	}

	if err := h.inflight.start(); err != nil {
		h.metrics.rejectedInflight.Inc()
		return res.fail(http.StatusServiceUnavailable, err.Error())
	}
	defer h.inflight.done()
	held := reservation{l: h.inflight}
	defer held.release()

	buf, size, release, err := h.body.read(r, held.reserve)
	h.metrics.compressedSize.Observe(float64(size))
	if err != nil {
		release()
		switch {
		case errors.Is(err, errInflightLimit):
			h.metrics.rejectedInflightBytes.Inc()
			return res.fail(http.StatusServiceUnavailable, err.Error())
		case errors.Is(err, errBodyTooLarge):
			return res.fail(http.StatusRequestEntityTooLarge, err.Error())
		}
		return res.fail(http.StatusBadRequest, err.Error())
	}
	h.metrics.decodedSize.Observe(float64(len(buf)))
	limits := h.overrides.ForTenant(tenant)
	dec := decodeOptions{maxLabels: limits.MaxLabelNamesPerSeries, reserve: held.reserve}
	series, err := decodeWrite(proto, buf, &dec)
	var (
		md        []*prompb.MetricMetadata
		mdInvalid *tenancy.Error
	)
	if err == nil {
		md, mdInvalid, err = h.metadata.take(tenant, proto, buf)
	}
	release() // neither decodeWrite's nor take's result shares anything with buf
	if err != nil {
		if errors.Is(err, errInflightLimit) {
			h.metrics.rejectedInflightBytes.Inc()
			return res.fail(http.StatusServiceUnavailable, err.Error())
		}
		level.Debug(h.logger).Log("msg", "refusing malformed remote write request", "tenant", tenant, "proto", proto, "err", err)
		return res.fail(http.StatusBadRequest, err.Error())
	}

	now := h.now()
	v := newSeriesValidator(limits, now)
	var (
		firstErr  *tenancy.Error
		discarded discardCounts
		stats     writeStats
		valid     = series[:0]
	)
	for _, ts := range series {
		if ts == nil {
			continue
		}
		if vi := v.check(ts); vi.reason != "" {
			discarded.add(vi.reason, len(ts.Samples)+len(ts.Histograms))
			if firstErr == nil {
				firstErr = v.err(ts, vi)
				if n, ok := dec.labelsOf(ts); ok && vi.reason == ReasonMaxLabelNamesPerSeries {
					// Decoded with its first labels only: say how many it has.
					firstErr = tenancy.NewMaxLabelNamesPerSeriesError(n, v.maxLabelNames, formatSeries(ts.Labels))
				}
			}
			continue
		}
		if len(ts.Samples)+len(ts.Histograms)+len(ts.Exemplars) == 0 {
			continue // nothing to write
		}
		stats.samples += len(ts.Samples)
		stats.histograms += len(ts.Histograms)
		stats.exemplars += len(ts.Exemplars)
		valid = append(valid, ts)
	}
	clear(series[len(valid):])
	for _, d := range discarded {
		h.discarded.Add(tenant, d.reason, d.n)
	}
	if firstErr != nil {
		level.Debug(h.logger).Log("msg", "dropping invalid series", "tenant", tenant, "discarded_series", discarded.series(), "first", firstErr)
	}
	if firstErr == nil {
		firstErr = mdInvalid
	}
	if len(valid) == 0 && len(md) == 0 {
		if firstErr != nil {
			return res.fail(firstErr.Status, firstErr.Msg)
		}
		return res.ok()
	}

	if n := stats.samples + stats.histograms + stats.exemplars + len(md); !h.limiter.AllowN(now, tenant, n) {
		h.discarded.Add(tenant, ReasonRateLimited, stats.samples+stats.histograms)
		h.metadata.discarded.Add(tenant, ReasonRateLimited, len(md))
		rl := tenancy.NewIngestionRateLimitedError(h.overrides.IngestionRate(tenant), h.overrides.IngestionBurstSize(tenant))
		return res.fail(rl.Status, rl.Msg)
	}

	if err := h.pusher.Push(r.Context(), tenant, &storepb.WriteRequest{Timeseries: valid, Tenant: tenant, Metadata: md}); err != nil {
		code, msg := pushErrorStatus(err)
		if code >= 500 {
			level.Warn(h.logger).Log("msg", "push to ingesters failed", "tenant", tenant, "status", code, "err", err)
		}
		return res.fail(code, msg)
	}
	h.metrics.receivedSamples.WithLabelValues(tenant).Add(float64(stats.samples + stats.histograms))
	res.written = stats
	if firstErr != nil {
		return res.fail(firstErr.Status, firstErr.Msg)
	}
	return res.ok()
}

// ok answers success: 204 No Content, as Prometheus's own receiver does for both 1.0 and 2.0.
func (r pushResult) ok() pushResult {
	r.code = http.StatusNoContent
	return r
}

func (r pushResult) fail(code int, msg string) pushResult {
	r.code, r.msg = code, msg
	return r
}

// pushErrorStatus maps a Pusher error to the HTTP answer (see Pusher).
func pushErrorStatus(err error) (int, string) {
	var terr *tenancy.Error
	if errors.As(err, &terr) && terr.Status >= 400 && terr.Status < 600 {
		return terr.Status, terr.Msg
	}
	// The wrapped gRPC status, with its own message (status.FromError would prefix the wrapping chain).
	var grpcErr interface{ GRPCStatus() *status.Status }
	if errors.As(err, &grpcErr) {
		switch st := grpcErr.GRPCStatus(); st.Code() {
		case codes.InvalidArgument:
			return http.StatusBadRequest, st.Message()
		case codes.ResourceExhausted:
			return http.StatusTooManyRequests, st.Message()
		}
	}
	return http.StatusServiceUnavailable, "push to ingesters: " + err.Error()
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
