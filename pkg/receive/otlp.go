package receive

import (
	"bytes"
	"context"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log/level"
	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	otlptranslator "github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// otlpDecodeRatio is how many bytes a decoded OTLP request (pdata) is reserved as holding per byte of its
// uncompressed protobuf or JSON body, before decoding it (instance_limits.max_inflight_push_requests_bytes).
// Decoded data points and attributes take a few times their wire size; the translated series are reserved
// separately, as they are built.
const otlpDecodeRatio = 8

// otlpTranslateRatio and otlpTranslateFloor bound the translated series of a request: at most this many bytes
// per byte of its uncompressed body, and at least the floor (errOTLPTooExpensive beyond: 400). An ordinary
// explicit-bucket histogram point translates into ~40 bytes per byte.
const (
	otlpTranslateRatio = 64
	otlpTranslateFloor = 4 << 20
)

// otlpFormat is the encoding of an OTLP/HTTP request and its answer.
type otlpFormat int

const (
	otlpProtobuf otlpFormat = iota + 1
	otlpJSON
)

func (f otlpFormat) String() string {
	if f == otlpJSON {
		return "JSON"
	}
	return "protobuf"
}

func (f otlpFormat) contentType() string {
	if f == otlpJSON {
		return "application/json"
	}
	return "application/x-protobuf"
}

// parseOTLPContentType returns the encoding a Content-Type names: application/x-protobuf (or
// application/protobuf) or application/json, the two of the OTLP/HTTP spec.
func parseOTLPContentType(contentType string) (otlpFormat, error) {
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, errors.Wrapf(err, "parse Content-Type %q: OTLP/HTTP expects application/x-protobuf or application/json", contentType)
	}
	switch mediaType {
	case "application/x-protobuf", "application/protobuf":
		return otlpProtobuf, nil
	case "application/json":
		return otlpJSON, nil
	}
	return 0, errors.Newf("unsupported Content-Type %q: OTLP/HTTP expects application/x-protobuf or application/json", contentType)
}

// OTLPHandler is the distributor's OTLP/HTTP metrics endpoint (POST /otlp/v1/metrics). See NewOTLPHandler.
type OTLPHandler struct {
	d          *Distributor
	converters sync.Pool // *otlptranslator.PrometheusConverter
	deltas     *deltaConverters
	warnings   *prometheus.CounterVec
}

// NewOTLPHandler returns d's OTLP metrics handler. It must be mounted behind tenancy.Config.HTTPMiddleware(false),
// as the remote write handler is, and shares d's instance limits, validation and tenant limits. For each
// request it: checks the Content-Type (415 unless protobuf or JSON) and Content-Encoding (gzip or none, 415
// otherwise); counts it against the instance limits (503 beyond); reads the body, at most max_recv_msg_size
// bytes as received and decompressed (413 beyond; a gzip body is decompressed as it is read, so memory stays
// bounded by what is accepted); decodes it (400 when malformed); converts delta metrics to cumulative when the
// tenant has otel_convert_delta_to_cumulative; translates it into series and metadata with Prometheus's OTLP
// translator under the tenant's otel_* limits (400, nothing written, when some metric cannot be translated:
// delta temporality not accepted, an unsupported type; or when it would translate into far more series than
// its size justifies, see otlpTranslateRatio); hands them to Distributor.Push; and answers as the
// OTLP spec says: 200 with an ExportMetricsServiceResponse in the request's encoding, whose partial_success
// says how many samples were refused and why when Push refused some; an error status (400, 429, 503, as for
// remote write) with a google.rpc.Status body otherwise. Call Close when done. It is safe for concurrent use.
func NewOTLPHandler(d *Distributor, reg prometheus.Registerer) *OTLPHandler {
	return &OTLPHandler{
		d:          d,
		converters: sync.Pool{New: func() any { return otlptranslator.NewPrometheusConverter(nil) }},
		deltas:     newDeltaConverters(),
		warnings: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "strata_distributor_otlp_translation_warnings_total",
			Help: "Warnings of Prometheus's OTLP translator while translating OTLP metrics, by category.",
		}, []string{"category"}),
	}
}

// Close stops the delta-to-cumulative conversion's background work.
func (h *OTLPHandler) Close() error { return h.deltas.Close() }

// otlpResult is the answer to one OTLP request.
type otlpResult struct {
	code   int
	msg    string
	format otlpFormat // 0 until the Content-Type is known
	// rejected is the partial_success's rejected data points (samples), with msg, on 200.
	rejected int64
	// warning is the X-Strata-Limit-Warning of a successful write (limit_usage.go).
	warning string
}

func (h *OTLPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	res := h.export(r)
	h.d.metrics.observeStatus(res.code)
	if res.code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if res.format == 0 {
		http.Error(w, res.msg, res.code)
		return
	}
	var (
		body []byte
		err  error
	)
	// The message may quote the request (a metric's name): protobuf strings must be UTF-8.
	res.msg = strings.ToValidUTF8(res.msg, "\uFFFD")
	if res.code/100 == 2 && res.warning != "" {
		w.Header().Set(HeaderLimitWarning, res.warning)
	}
	// 2xx: 200, or 202 when the HA tracker dropped the request (a success for the sender, as for remote write).
	if res.code/100 == 2 {
		resp := pmetricotlp.NewExportResponse()
		if res.msg != "" && res.code == http.StatusOK {
			resp.PartialSuccess().SetRejectedDataPoints(res.rejected)
			resp.PartialSuccess().SetErrorMessage(res.msg)
		}
		if res.format == otlpJSON {
			body, err = resp.MarshalJSON()
		} else {
			body, err = resp.MarshalProto()
		}
	} else {
		st := &rpcstatus.Status{Code: int32(grpcCodeOf(res.code)), Message: res.msg}
		if res.format == otlpJSON {
			body, err = protojson.Marshal(st)
		} else {
			body, err = proto.Marshal(st)
		}
	}
	if err != nil {
		http.Error(w, errors.Wrap(err, "encode the OTLP response").Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", res.format.contentType())
	w.WriteHeader(res.code)
	_, _ = w.Write(body)
}

// grpcCodeOf is the google.rpc.Status code of an error answer's HTTP status.
func grpcCodeOf(code int) codes.Code {
	switch code {
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusMethodNotAllowed:
		return codes.Unimplemented
	}
	if code >= 500 {
		return codes.Internal
	}
	return codes.InvalidArgument
}

// export handles one request; see NewOTLPHandler for the steps.
func (h *OTLPHandler) export(r *http.Request) otlpResult {
	if r.Method != http.MethodPost {
		return otlpResult{code: http.StatusMethodNotAllowed, msg: "OTLP export requires POST, got " + r.Method}
	}
	tenant, err := tenancy.TenantFromContext(r.Context())
	if err != nil {
		return otlpResult{code: tenancy.HTTPStatus(err), msg: err.Error()}
	}
	format, err := parseOTLPContentType(r.Header.Get("Content-Type"))
	if err != nil {
		return otlpResult{code: http.StatusUnsupportedMediaType, msg: err.Error()}
	}
	res := otlpResult{format: format}
	gzipped, err := otlpContentEncoding(r.Header.Get("Content-Encoding"))
	if err != nil {
		return res.fail(http.StatusUnsupportedMediaType, err.Error())
	}

	held, err := h.d.start()
	if err != nil {
		return res.fail(http.StatusServiceUnavailable, err.Error())
	}
	defer held.end()

	body, err := h.read(r, gzipped, held.reserve)
	if err == nil {
		err = held.reserve(otlpDecodeRatio * len(body))
	}
	if err != nil {
		return h.readFailed(res, err)
	}
	req := pmetricotlp.NewExportRequest()
	if format == otlpJSON {
		err = req.UnmarshalJSON(body)
	} else {
		err = req.UnmarshalProto(body)
	}
	if err != nil {
		return res.fail(http.StatusBadRequest, errors.Wrapf(err, "decode the OTLP %s body", format).Error())
	}
	budget := max(otlpTranslateRatio*len(body), otlpTranslateFloor)
	body = nil //nolint:ineffassign // let the body be collected while translating

	limits := h.d.overrides.ForTenant(tenant)
	md := req.Metrics()
	hasDelta := hasDeltaMetrics(md)
	if hasDelta && limits.OTelConvertDeltaToCumulative {
		if md, err = h.deltas.convert(r.Context(), tenant, limits.MaxGlobalSeriesPerUser, md); err != nil {
			return res.fail(http.StatusServiceUnavailable, err.Error())
		}
	}

	app := newOTLPAppender(held.reserve, budget)
	if err := h.translate(r.Context(), tenant, app, md, limits); err != nil {
		switch {
		case errors.Is(app.err, errOTLPTooExpensive):
			return res.fail(http.StatusBadRequest, errors.Wrap(app.err, "translate OTLP metrics").Error())
		case app.err != nil:
			h.d.metrics.rejectedInflightBytes.Inc()
			return res.fail(http.StatusServiceUnavailable, app.err.Error())
		case r.Context().Err() != nil:
			return res.fail(http.StatusServiceUnavailable, errors.Wrap(r.Context().Err(), "translate OTLP metrics").Error())
		}
		// Every metric refused, one per line (errors.Join): on one line, as Mimir answers.
		msg := "otlp parse error: " + strings.ReplaceAll(err.Error(), "\n", "; ")
		if hasDelta && !limits.OTelConvertDeltaToCumulative && !limits.OTelNativeDeltaIngestion {
			msg += " (delta temporality is not accepted: export cumulative temporality, or ask for otel_convert_delta_to_cumulative to be enabled for this tenant)"
		}
		level.Debug(h.d.logger).Log("msg", "refusing OTLP request", "tenant", tenant, "err", msg)
		return res.fail(http.StatusBadRequest, msg)
	}

	metadata, metadataErr := validateMetadata(limits, app.metadata, func(reason string) { h.d.metadata.discarded.Add(tenant, reason, 1) })
	if len(app.series) == 0 && len(metadata) == 0 {
		if metadataErr != nil {
			return res.partial(0, metadataErr.Msg)
		}
		return res.ok()
	}
	written, err := h.d.Push(r.Context(), tenant, &PushRequest{Series: app.series, Metadata: metadata, MetadataErr: metadataErr})
	res.warning = written.LimitWarning
	if err != nil {
		var terr *tenancy.Error
		if n := written.Samples + written.Histograms; errors.As(err, &terr) && terr.Status == http.StatusBadRequest && (n > 0 || len(metadata) > 0) {
			// Some was written: the OTLP spec's partial success.
			return res.partial(int64(app.points-n), terr.Msg)
		}
		code, msg := pushErrorStatus(err)
		if code >= 500 {
			level.Warn(h.d.logger).Log("msg", "push to ingesters failed", "tenant", tenant, "status", code, "err", err)
		}
		return res.fail(code, msg)
	}
	return res.ok()
}

// translate runs Prometheus's OTLP translator over req into app, with tenant's settings, and counts its
// warnings.
func (h *OTLPHandler) translate(ctx context.Context, tenant string, app *otlpAppender, md pmetric.Metrics, limits *tenancy.Limits) error {
	conv := h.converters.Get().(*otlptranslator.PrometheusConverter)
	conv.Reset(app)
	annots, err := conv.FromMetrics(ctx, md, otlpTranslatorSettings(limits))
	conv.Reset(nil)
	h.converters.Put(conv)
	if len(annots) > 0 {
		for category, n := range otlptranslator.CountWarningsByCategory(annots) {
			h.warnings.WithLabelValues(string(category)).Add(float64(n))
		}
		ws, _ := annots.AsStrings("", 10, 0)
		level.Debug(h.d.logger).Log("msg", "warnings translating OTLP metrics", "tenant", tenant, "warnings", strings.Join(ws, "; "))
	}
	return err
}

// readFailed maps an error of reading a body to the answer.
func (h *OTLPHandler) readFailed(res otlpResult, err error) otlpResult {
	switch {
	case errors.Is(err, errInflightLimit):
		h.d.metrics.rejectedInflightBytes.Inc()
		return res.fail(http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, errBodyTooLarge):
		return res.fail(http.StatusRequestEntityTooLarge, err.Error())
	}
	return res.fail(http.StatusBadRequest, err.Error())
}

// otlpContentEncoding says whether a Content-Encoding is gzip; none (or identity) is not, anything else is an
// error (415).
func otlpContentEncoding(enc string) (gzipped bool, err error) {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity":
		return false, nil
	case "gzip":
		return true, nil
	}
	return false, errors.Newf("unsupported Content-Encoding %q: OTLP/HTTP bodies are sent as is or gzip-compressed", enc)
}

// otlpReadChunk is the step a decompressed body grows by (reserved before it is read into).
const otlpReadChunk = 64 << 10

// read returns the body of r, decompressed when gzipped. The body as received and decompressed is at most
// max_recv_msg_size bytes (errBodyTooLarge beyond: 413); reserve is told every byte before it is allocated.
func (h *OTLPHandler) read(r *http.Request, gzipped bool, reserve func(int) error) ([]byte, error) {
	maxSize := h.d.cfg.MaxRecvMsgSize
	if r.ContentLength > int64(maxSize) {
		h.d.metrics.compressedSize.Observe(float64(r.ContentLength))
		return nil, errors.Wrapf(errBodyTooLarge, "request body of %d bytes exceeds the limit of %d bytes (max_recv_msg_size)", r.ContentLength, maxSize)
	}
	body, err := readLimited(r.Body, maxSize, int(max(r.ContentLength, 0)), reserve)
	h.d.metrics.compressedSize.Observe(float64(len(body)))
	if err != nil {
		return nil, errors.Wrap(err, "read request body")
	}
	if !gzipped {
		h.d.metrics.decodedSize.Observe(float64(len(body)))
		return body, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, errors.Wrap(err, "decompress request body (gzip)")
	}
	decoded, err := readLimited(zr, maxSize, 0, reserve)
	if err != nil {
		return nil, errors.Wrap(err, "decompress request body (gzip)")
	}
	h.d.metrics.decodedSize.Observe(float64(len(decoded)))
	return decoded, nil
}

// readLimited reads rd to its end, at most maxSize bytes (errBodyTooLarge beyond), starting with sizeHint bytes
// of room (a Content-Length) and growing by doubling; reserve is told each allocation's size first.
func readLimited(rd io.Reader, maxSize, sizeHint int, reserve func(int) error) ([]byte, error) {
	var buf []byte
	if sizeHint > 0 {
		if err := reserve(sizeHint + 1); err != nil {
			return nil, err
		}
		buf = make([]byte, 0, sizeHint+1) // +1: see the end without growing
	}
	for {
		if len(buf) == cap(buf) {
			n := min(max(2*cap(buf), otlpReadChunk), maxSize+1)
			if n <= cap(buf) {
				return buf, errors.Wrapf(errBodyTooLarge, "request body exceeds the limit of %d bytes (max_recv_msg_size)", maxSize)
			}
			if err := reserve(n); err != nil {
				return buf, err
			}
			buf = append(make([]byte, 0, n), buf...)
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > maxSize {
			return buf, errors.Wrapf(errBodyTooLarge, "request body exceeds the limit of %d bytes (max_recv_msg_size)", maxSize)
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (r otlpResult) ok() otlpResult {
	r.code = http.StatusOK
	return r
}

func (r otlpResult) partial(rejected int64, msg string) otlpResult {
	r.code, r.rejected, r.msg = http.StatusOK, rejected, msg
	return r
}

func (r otlpResult) fail(code int, msg string) otlpResult {
	r.code, r.msg = code, msg
	return r
}
