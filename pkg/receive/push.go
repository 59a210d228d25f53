package receive

import (
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// pushHandler is the distributor's remote write endpoint (POST /api/v1/push, /api/v1/receive): it negotiates
// and decodes the body, hands the request to the Distributor, and maps the result to HTTP.
type pushHandler struct {
	d    *Distributor
	body *snappyBodyReader
	// slabs are reused for decoding 1.0 requests (remotewrite.Options.Slabs).
	slabs *freeList[remotewrite.Slabs]
}

// NewPushHandler returns d's remote write handler (1.0 and 2.0). It must be mounted behind
// tenancy.Config.HTTPMiddleware(false), which puts the validated tenant in the request's context. For each
// request it: checks the body's size (413), Content-Type (415) and Content-Encoding (415); counts it against
// the distributor's instance limits (503 beyond); decompresses and decodes it (400 when malformed, when it looks
// like the other protocol than its Content-Type, or when it would decode into more memory than its size
// justifies, see maxDecodeRatioV1); hands it to Distributor.Push; and answers 204 when all series were valid,
// 400 with the first invalid series' error when some were not (the valid ones are written: Mimir's partial
// acceptance), 429 when rate limited, or the Pusher's error (see Pusher). The handler is safe for concurrent use.
func NewPushHandler(d *Distributor) http.Handler {
	return &pushHandler{d: d, body: newSnappyBodyReader(d.cfg.MaxRecvMsgSize), slabs: newDecodeSlabsPool()}
}

// maxPooledDecodeSlabs is how many decoded requests' slabs a push handler keeps for reuse (a freeList).
const maxPooledDecodeSlabs = 8

func newDecodeSlabsPool() *freeList[remotewrite.Slabs] {
	return newFreeList(maxPooledDecodeSlabs, func(s *remotewrite.Slabs) bool {
		if s.Size() > maxPooledForwardSlabs {
			return false
		}
		s.Reset()
		return true
	})
}

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
	written PushStats
}

func (h *pushHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	res := h.push(r)
	if res.proto == writeV2 {
		// Prometheus's 2.0 receiver sets them on every answer once the message type is known; a sender reads
		// a missing header as 0 written.
		hd := w.Header()
		hd.Set(headerSamplesWritten, strconv.Itoa(res.written.Samples))
		hd.Set(headerHistogramsWritten, strconv.Itoa(res.written.Histograms))
		hd.Set(headerExemplarsWritten, strconv.Itoa(res.written.Exemplars))
	}
	if res.code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if res.code/100 == 2 && res.written.LimitWarning != "" {
		w.Header().Set(HeaderLimitWarning, res.written.LimitWarning)
	}
	if res.code >= 400 {
		http.Error(w, res.msg, res.code)
	} else {
		w.WriteHeader(res.code)
		if res.msg != "" { // 202: deduplicated by the HA tracker
			_, _ = io.WriteString(w, res.msg)
		}
	}
	h.d.metrics.observeStatus(res.code)
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

	held, err := h.d.start()
	if err != nil {
		return res.fail(http.StatusServiceUnavailable, err.Error())
	}
	defer held.end()

	buf, compressed, release, err := h.body.read(r, held.reserve)
	size := len(compressed)
	if compressed == nil && r.ContentLength > 0 { // refused before it was read
		size = int(min(r.ContentLength, math.MaxInt32))
	}
	h.d.metrics.compressedSize.Observe(float64(size))
	if err != nil {
		release()
		switch {
		case errors.Is(err, errInflightLimit):
			h.d.metrics.rejectedInflightBytes.Inc()
			return res.fail(http.StatusServiceUnavailable, err.Error())
		case errors.Is(err, errBodyTooLarge):
			return res.fail(http.StatusRequestEntityTooLarge, err.Error())
		}
		return res.fail(http.StatusBadRequest, err.Error())
	}
	h.d.metrics.decodedSize.Observe(float64(len(buf)))
	// The series' strings alias the decompressed body (no copy of it), and 1.0's messages are decoded into
	// reused slabs: both are given back when the Pusher is done with the series (Distributor.Push). What the
	// distributor keeps beyond that is copied (the HA tracker's cluster and replica); the metadata are decoded
	// into strings of their own.
	limits := h.d.overrides.ForTenant(tenant)
	dec := remotewrite.Options{MaxLabels: limits.MaxLabelNamesPerSeries, Reserve: held.reserve, AliasBuf: true}
	req := PushRequest{LabelCount: dec.LabelsOf, Release: release}
	if proto == writeV1 && h.d.skipKnownLabels(limits) {
		// The series the distributor knows valid are not checked again (validSeries): their labels are not
		// decoded either, unless the Push finds them needed after all (PushRequest.known).
		labelLimits := newSeriesValidator(limits, time.Time{}).labelLimits()
		dec.SkipLabels = func(runs [][]byte) []bool {
			req.known, req.knownLimits = h.d.lookupKnown(tenant, labelLimits, runs), labelLimits
			if req.known == nil {
				return nil
			}
			return req.known.known
		}
	}
	if proto == writeV1 {
		req.Compressed = compressed // forwarded as is when nothing in it changes
	}
	if proto == writeV1 {
		slabs := h.slabs.get()
		dec.Slabs = slabs
		req.Release = func() {
			h.slabs.put(slabs)
			release()
		}
	}
	dec.KeepFrames = proto == writeV1    // forwarded as received when unchanged (encodeOnce)
	dec.KeepLabelRuns = proto == writeV1 // an in-process ingester knows series by them (seriesRefs)
	req.Series, err = remotewrite.Decode(proto, buf, &dec)
	req.Frames, req.LabelRuns = dec.Frames(), dec.LabelRuns()
	if err == nil {
		req.Metadata, req.MetadataErr, err = h.d.metadata.take(tenant, proto, buf)
	}
	if err != nil {
		req.Release()
		h.d.valid.done(req.known)
		if errors.Is(err, errInflightLimit) {
			h.d.metrics.rejectedInflightBytes.Inc()
			return res.fail(http.StatusServiceUnavailable, err.Error())
		}
		level.Debug(h.d.logger).Log("msg", "refusing malformed remote write request", "tenant", tenant, "proto", proto, "err", err)
		return res.fail(http.StatusBadRequest, err.Error())
	}

	res.written, err = h.d.Push(r.Context(), tenant, &req)
	if err != nil {
		code, msg := pushErrorStatus(err)
		if code >= 500 {
			level.Warn(h.d.logger).Log("msg", "push to ingesters failed", "tenant", tenant, "status", code, "err", err)
		}
		return res.fail(code, msg)
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

// pushErrorStatus maps an error of Distributor.Push to the HTTP answer (see Pusher).
func pushErrorStatus(err error) (int, string) {
	var herr *haStatusError // the HA tracker's 202 (deduplicated) or 503
	if errors.As(err, &herr) {
		return herr.code, herr.msg
	}
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
