package query

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/cardinalitypb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Mimir's and Prometheus's bounds of the cardinality endpoints' limit parameter.
const (
	cardinalityDefaultLimit = 20
	cardinalityMaxLimit     = 500
	tsdbStatusDefaultLimit  = 10
	tsdbStatusMaxLimit      = 10000
	maxLabelNameLength      = 1024
)

// CardinalityConfig configures the cardinality API (/api/v1/cardinality/label_names, …/label_values,
// /api/v1/status/tsdb).
type CardinalityConfig struct {
	// Enabled serves the endpoints (Mimir's cardinality_analysis_enabled; on by default in Strata).
	Enabled bool `yaml:"enabled"`
	// MaxLabelNamesPerRequest bounds label_names[] of /cardinality/label_values (Mimir's
	// label_values_max_cardinality_label_names_per_request).
	MaxLabelNamesPerRequest int `yaml:"max_label_names_per_request"`
	// MaxLabelValues bounds the label name and value pairs one ingester may answer; a request over it is refused
	// (422): the tenant narrows the selector.
	MaxLabelValues int `yaml:"max_label_values"`
	// Timeout bounds one request to the ingesters.
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultCardinalityConfig returns the cardinality API's defaults.
func DefaultCardinalityConfig() CardinalityConfig {
	return CardinalityConfig{Enabled: true, MaxLabelNamesPerRequest: 100, MaxLabelValues: 500_000, Timeout: 30 * time.Second}
}

// Validate checks the config.
func (c CardinalityConfig) Validate() error {
	if c.MaxLabelNamesPerRequest <= 0 || c.MaxLabelValues <= 0 || c.Timeout <= 0 {
		return errors.New("querier: cardinality max_label_names_per_request, max_label_values and timeout must be positive")
	}
	return nil
}

// CardinalityReader reads the label cardinality of the TSDB heads one ingester holds for the tenants of ctx
// (tenancy.WithTenants): an ingester in the same process, or a strata.Cardinality gRPC client
// (GRPCCardinalityReader).
type CardinalityReader interface {
	ReadCardinality(ctx context.Context, req *cardinalitypb.CardinalityRequest) (*cardinalitypb.CardinalityResponse, error)
}

// CardinalityQuerier answers Mimir's cardinality API and Prometheus's /api/v1/status/tsdb from the heads of the
// ring's ingesters. It asks every ingester of the tenant (all, or its shuffle shard) for its counts by label name
// and value, and merges them: distinct values are the union of the ingesters' values (exact whatever the
// replication); series counts are the ingesters' sum divided by the replication factor (each series is in
// min(RF, ingesters) ingesters), rounded up, as Mimir's count_method=inmemory does. The counts are exact while
// every ingester answers and every write reached all its replicas; with a failed ingester (tolerated as reads
// tolerate it) series counts are lower. It is safe for concurrent use.
type CardinalityQuerier struct {
	cfg  CardinalityConfig
	rf   int
	dial func(addr string) (CardinalityReader, error)
	// replicas lists the ingesters, with shuffle sharding (MetadataQuerier's).
	replicas *MetadataQuerier
}

// NewCardinalityQuerier returns a querier over the ingesters replicas names, reached with dial, written with
// replication factor rf.
func NewCardinalityQuerier(cfg CardinalityConfig, replicas func() (MetadataReplicas, error), rf int, dial func(addr string) (CardinalityReader, error)) *CardinalityQuerier {
	return &CardinalityQuerier{cfg: cfg, rf: max(1, rf), dial: dial, replicas: NewMetadataQuerier(replicas, nil)}
}

// WithShuffleSharding makes the reads of tenants with a shard size above 0 ask only their shuffle shard, as
// MetadataQuerier.WithShuffleSharding. It returns q.
func (q *CardinalityQuerier) WithShuffleSharding(r ShardRing, shardSize func(tenant string) int, lookback time.Duration) *CardinalityQuerier {
	q.replicas.WithShuffleSharding(r, shardSize, lookback)
	return q
}

// cardinality is the ingesters' merged answer, series counts deduplicated.
type cardinality struct {
	series, totalSeries, chunks uint64
	minTime, maxTime            int64
	// values[name][value] is how many series have name=value.
	values map[string]map[string]uint64
}

// read asks the tenant's ingesters (ctx carries the tenant) and merges their answers.
func (q *CardinalityQuerier) read(ctx context.Context, req *cardinalitypb.CardinalityRequest) (*cardinality, error) {
	ctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
	defer cancel()
	rs, err := q.replicas.tenantReplicas(ctx)
	if err != nil {
		return nil, &StorageError{Err: errors.Wrap(err, "list the ingesters for a cardinality read")}
	}
	req.MaxLabelValues = int64(q.cfg.MaxLabelValues)
	var (
		mtx      sync.Mutex
		sums     = map[string]map[string]uint64{}
		merged   = &cardinality{minTime: math.MaxInt64, maxTime: math.MinInt64}
		failed   []int
		errs     []error
		rejected error
		pairs    int // distinct name and value pairs in sums
		wg       sync.WaitGroup
	)
	for i, addr := range rs.Addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := q.readOne(ctx, addr, req)
			mtx.Lock()
			defer mtx.Unlock()
			if err != nil {
				if c := status.Code(err); c == codes.ResourceExhausted || c == codes.InvalidArgument {
					rejected = err
				}
				failed = append(failed, i)
				errs = append(errs, errors.Wrapf(err, "read cardinality from ingester %s", addr))
				return
			}
			if rejected != nil {
				return // the answer is refused: merge no more
			}
			merged.series += res.GetSeries()
			merged.totalSeries += res.GetTotalSeries()
			merged.chunks += res.GetChunks()
			if res.GetSeries() > 0 || res.GetTotalSeries() > 0 {
				merged.minTime, merged.maxTime = min(merged.minTime, res.GetMinTime()), max(merged.maxTime, res.GetMaxTime())
			}
			for _, lv := range res.GetLabels() {
				vs := sums[lv.GetName()]
				if vs == nil {
					vs = map[string]uint64{}
					sums[lv.GetName()] = vs
				}
				for _, v := range lv.GetValues() {
					if _, ok := vs[v.GetValue()]; !ok {
						if pairs++; pairs > q.cfg.MaxLabelValues {
							rejected = status.Errorf(codes.ResourceExhausted, "the tenant's series have more than %d label values (name and value pairs) to count: narrow the selector or ask fewer label names", q.cfg.MaxLabelValues)
							return
						}
					}
					vs[v.GetValue()] += v.GetSeries()
				}
			}
		}()
	}
	wg.Wait()
	if rejected != nil {
		return nil, rejected
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !rs.tolerates(failed) {
		err := errors.Newf("%d ingesters unhealthy in the ring", rs.Unhealthy)
		if len(errs) > 0 {
			err = errs[0]
		}
		return nil, &StorageError{Err: errors.Wrapf(err, "%d of %d ingesters failed or unhealthy, more than the replication tolerates", len(failed)+rs.Unhealthy, len(rs.Addrs)+rs.Unhealthy)}
	}
	// Each series is in min(RF, ingesters) of them.
	d := uint64(max(1, min(q.rf, len(rs.Addrs)+rs.Unhealthy)))
	dedup := func(n uint64) uint64 { return (n + d - 1) / d }
	merged.series, merged.totalSeries, merged.chunks = dedup(merged.series), dedup(merged.totalSeries), dedup(merged.chunks)
	for _, vs := range sums {
		for v, n := range vs {
			vs[v] = dedup(n)
		}
	}
	merged.values = sums
	return merged, nil
}

func (q *CardinalityQuerier) readOne(ctx context.Context, addr string, req *cardinalitypb.CardinalityRequest) (*cardinalitypb.CardinalityResponse, error) {
	r, err := q.dial(addr)
	if err != nil {
		return nil, err
	}
	return r.ReadCardinality(ctx, req)
}

// LabelNamesCardinality is Mimir's /api/v1/cardinality/label_names answer.
type LabelNamesCardinality struct {
	LabelValuesCountTotal int                    `json:"label_values_count_total"`
	LabelNamesCount       int                    `json:"label_names_count"`
	Cardinality           []LabelNameCardinality `json:"cardinality"`
}

// LabelNameCardinality is one label name and its number of distinct values.
type LabelNameCardinality struct {
	LabelName        string `json:"label_name"`
	LabelValuesCount int    `json:"label_values_count"`
}

// LabelValuesCardinality is Mimir's /api/v1/cardinality/label_values answer.
type LabelValuesCardinality struct {
	SeriesCountTotal uint64                       `json:"series_count_total"`
	Labels           []LabelValuesCardinalityItem `json:"labels"`
}

// LabelValuesCardinalityItem is one requested label name: its values' series counts.
type LabelValuesCardinalityItem struct {
	LabelName        string                  `json:"label_name"`
	LabelValuesCount int                     `json:"label_values_count"`
	SeriesCount      uint64                  `json:"series_count"`
	Cardinality      []LabelValueCardinality `json:"cardinality"`
}

// LabelValueCardinality is one label value and the number of series that have it.
type LabelValueCardinality struct {
	LabelValue  string `json:"label_value"`
	SeriesCount uint64 `json:"series_count"`
}

// TSDBStatus is Prometheus's /api/v1/status/tsdb data.
type TSDBStatus struct {
	HeadStats                   TSDBHeadStats `json:"headStats"`
	SeriesCountByMetricName     []TSDBStat    `json:"seriesCountByMetricName"`
	LabelValueCountByLabelName  []TSDBStat    `json:"labelValueCountByLabelName"`
	MemoryInBytesByLabelName    []TSDBStat    `json:"memoryInBytesByLabelName"`
	SeriesCountByLabelValuePair []TSDBStat    `json:"seriesCountByLabelValuePair"`
}

// TSDBHeadStats are the tenant's head statistics, over its ingesters.
type TSDBHeadStats struct {
	NumSeries     uint64 `json:"numSeries"`
	NumLabelPairs int    `json:"numLabelPairs"`
	ChunkCount    int64  `json:"chunkCount"`
	MinTime       int64  `json:"minTime"`
	MaxTime       int64  `json:"maxTime"`
}

// TSDBStat is one name and its count.
type TSDBStat struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

// LabelNames answers /cardinality/label_names: the distinct values of each label name of the selected series, the
// limit names with the most values (ties by name).
func (q *CardinalityQuerier) LabelNames(ctx context.Context, ms []*labels.Matcher, method cardinalitypb.CountMethod, limit int) (*LabelNamesCardinality, error) {
	c, err := q.read(ctx, &cardinalitypb.CardinalityRequest{Matchers: store.MatchersToPB(ms...), CountMethod: method})
	if err != nil {
		return nil, err
	}
	out := &LabelNamesCardinality{LabelNamesCount: len(c.values), Cardinality: []LabelNameCardinality{}}
	for name, vs := range c.values {
		out.LabelValuesCountTotal += len(vs)
		out.Cardinality = append(out.Cardinality, LabelNameCardinality{LabelName: name, LabelValuesCount: len(vs)})
	}
	sort.Slice(out.Cardinality, func(a, b int) bool {
		x, y := out.Cardinality[a], out.Cardinality[b]
		if x.LabelValuesCount != y.LabelValuesCount {
			return x.LabelValuesCount > y.LabelValuesCount
		}
		return x.LabelName < y.LabelName
	})
	if len(out.Cardinality) > limit {
		out.Cardinality = out.Cardinality[:limit]
	}
	return out, nil
}

// LabelValues answers /cardinality/label_values: for each of names, the series count of each of its values
// among the selected series (the limit values with the most series, ties by value), every name answered even
// without series.
func (q *CardinalityQuerier) LabelValues(ctx context.Context, names []string, ms []*labels.Matcher, method cardinalitypb.CountMethod, limit int) (*LabelValuesCardinality, error) {
	c, err := q.read(ctx, &cardinalitypb.CardinalityRequest{Matchers: store.MatchersToPB(ms...), LabelNames: names, CountMethod: method})
	if err != nil {
		return nil, err
	}
	out := &LabelValuesCardinality{SeriesCountTotal: c.totalSeries, Labels: make([]LabelValuesCardinalityItem, 0, len(names))}
	for _, name := range names {
		vs := c.values[name]
		item := LabelValuesCardinalityItem{LabelName: name, LabelValuesCount: len(vs), Cardinality: make([]LabelValueCardinality, 0, len(vs))}
		for v, n := range vs {
			item.SeriesCount += n
			item.Cardinality = append(item.Cardinality, LabelValueCardinality{LabelValue: v, SeriesCount: n})
		}
		sort.Slice(item.Cardinality, func(a, b int) bool {
			x, y := item.Cardinality[a], item.Cardinality[b]
			if x.SeriesCount != y.SeriesCount {
				return x.SeriesCount > y.SeriesCount
			}
			return x.LabelValue < y.LabelValue
		})
		if len(item.Cardinality) > limit {
			item.Cardinality = item.Cardinality[:limit]
		}
		out.Labels = append(out.Labels, item)
	}
	sort.SliceStable(out.Labels, func(a, b int) bool {
		x, y := out.Labels[a], out.Labels[b]
		if x.SeriesCount != y.SeriesCount {
			return x.SeriesCount > y.SeriesCount
		}
		return x.LabelName < y.LabelName
	})
	return out, nil
}

// TSDBStatus answers /status/tsdb as Prometheus does for its head, over the tenant's heads in the ingesters:
// each list holds its limit largest entries (ties by name).
func (q *CardinalityQuerier) TSDBStatus(ctx context.Context, limit int) (*TSDBStatus, error) {
	c, err := q.read(ctx, &cardinalitypb.CardinalityRequest{})
	if err != nil {
		return nil, err
	}
	out := &TSDBStatus{HeadStats: TSDBHeadStats{NumSeries: c.series, ChunkCount: int64(c.chunks), MinTime: c.minTime, MaxTime: c.maxTime}}
	var byMetric, valueCounts, memory, pairs []TSDBStat
	for name, vs := range c.values {
		out.HeadStats.NumLabelPairs += len(vs)
		valueCounts = append(valueCounts, TSDBStat{Name: name, Value: uint64(len(vs))})
		var size uint64
		for v, n := range vs {
			if name == model.MetricNameLabel {
				byMetric = append(byMetric, TSDBStat{Name: v, Value: n})
			}
			pairs = append(pairs, TSDBStat{Name: name + "=" + v, Value: n})
			size += labels.SizeOfLabels(name, v, n)
		}
		memory = append(memory, TSDBStat{Name: name, Value: size})
	}
	out.SeriesCountByMetricName = topStats(byMetric, limit)
	out.LabelValueCountByLabelName = topStats(valueCounts, limit)
	out.MemoryInBytesByLabelName = topStats(memory, limit)
	out.SeriesCountByLabelValuePair = topStats(pairs, limit)
	return out, nil
}

// topStats sorts s by value (largest first, ties by name) and keeps the first limit. Never nil.
func topStats(s []TSDBStat, limit int) []TSDBStat {
	sort.Slice(s, func(a, b int) bool {
		if s[a].Value != s[b].Value {
			return s[a].Value > s[b].Value
		}
		return s[a].Name < s[b].Name
	})
	if len(s) > limit {
		s = s[:limit]
	}
	if s == nil {
		s = []TSDBStat{}
	}
	return s
}

// IsCardinalityPath reports whether path (without the API prefix) is served by CardinalityQuerier.Serve.
func IsCardinalityPath(path string) bool {
	return path == "/cardinality/label_names" || path == "/cardinality/label_values" || path == "/status/tsdb"
}

// Serve answers GET/POST path (/cardinality/label_names, /cardinality/label_values, /status/tsdb, without the
// API prefix) for the tenant of the request context (tenancy's HTTP middleware). checkSelector bounds the selector
// before it is parsed. Bad parameters are 400, an answer over max_label_values 422, failed ingesters 503.
func (q *CardinalityQuerier) Serve(w http.ResponseWriter, r *http.Request, path string, checkSelector func(string) *tenancy.Error) {
	fail := func(code int, typ, msg string) {
		writeJSON(w, code, fmt.Sprintf(`{"status":"error","errorType":%q,"error":%q}`, typ, msg))
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "bad_data", "use GET or POST")
		return
	}
	if _, err := tenancy.TenantFromContext(r.Context()); err != nil {
		fail(tenancy.HTTPStatus(err), "bad_data", err.Error())
		return
	}
	if !q.cfg.Enabled {
		fail(http.StatusBadRequest, "bad_data", "cardinality analysis is disabled (querier.cardinality.enabled)")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	var (
		res any
		err error
	)
	if path == "/status/tsdb" {
		limit, perr := parseLimit(r, tsdbStatusDefaultLimit, 1, tsdbStatusMaxLimit)
		if perr != nil {
			fail(http.StatusBadRequest, "bad_data", perr.Error())
			return
		}
		var st *TSDBStatus
		if st, err = q.TSDBStatus(r.Context(), limit); err == nil {
			res = struct {
				Status string      `json:"status"`
				Data   *TSDBStatus `json:"data"`
			}{Status: "success", Data: st}
		}
	} else {
		limit, perr := parseLimit(r, cardinalityDefaultLimit, 0, cardinalityMaxLimit)
		if perr != nil {
			fail(http.StatusBadRequest, "bad_data", perr.Error())
			return
		}
		ms, method, terr := parseCardinalityParams(r, checkSelector)
		if terr != nil {
			fail(terr.Status, "bad_data", terr.Error())
			return
		}
		if path == "/cardinality/label_names" {
			res, err = q.LabelNames(r.Context(), ms, method, limit)
		} else {
			names, nerr := q.parseLabelNames(r)
			if nerr != nil {
				fail(http.StatusBadRequest, "bad_data", nerr.Error())
				return
			}
			res, err = q.LabelValues(r.Context(), names, ms, method, limit)
		}
	}
	if err != nil {
		switch {
		case r.Context().Err() != nil:
			fail(http.StatusServiceUnavailable, "canceled", err.Error())
		case status.Code(err) == codes.ResourceExhausted:
			fail(http.StatusUnprocessableEntity, "execution", status.Convert(err).Message())
		case status.Code(err) == codes.InvalidArgument:
			fail(http.StatusBadRequest, "bad_data", status.Convert(err).Message())
		case errors.Is(err, context.DeadlineExceeded):
			fail(http.StatusServiceUnavailable, "timeout", err.Error())
		default:
			fail(http.StatusServiceUnavailable, "unavailable", err.Error())
		}
		return
	}
	body, err := json.Marshal(res)
	if err != nil {
		fail(http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, string(body))
}

// parseLimit reads the limit parameter: def when absent, else an integer in [lo, hi].
func parseLimit(r *http.Request, def, lo, hi int) (int, error) {
	s := r.FormValue("limit")
	if s == "" {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		return 0, errors.Newf("limit must be an integer between %d and %d, got %q", lo, hi, s)
	}
	return v, nil
}

// parseCardinalityParams reads selector and count_method.
func parseCardinalityParams(r *http.Request, checkSelector func(string) *tenancy.Error) ([]*labels.Matcher, cardinalitypb.CountMethod, *tenancy.Error) {
	method := cardinalitypb.CountMethod_IN_MEMORY
	switch m := r.FormValue("count_method"); m {
	case "", "inmemory":
	case "active":
		method = cardinalitypb.CountMethod_ACTIVE
	default:
		return nil, 0, &tenancy.Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf("invalid count_method %q: use inmemory or active", m)}
	}
	sel := r.FormValue("selector")
	if sel == "" {
		return nil, method, nil
	}
	if checkSelector != nil {
		if err := checkSelector(sel); err != nil {
			return nil, 0, err
		}
	}
	ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(sel)
	if err != nil {
		return nil, 0, &tenancy.Error{Status: http.StatusBadRequest, Msg: "invalid selector: " + err.Error()}
	}
	return ms, method, nil
}

// parseLabelNames reads label_names[]: required, at most MaxLabelNamesPerRequest distinct valid names, in the
// order first given.
func (q *CardinalityQuerier) parseLabelNames(r *http.Request) ([]string, error) {
	raw := r.Form["label_names[]"]
	if len(raw) == 0 {
		return nil, errors.New("label_names[] is required: name at least one label")
	}
	seen := map[string]bool{}
	var names []string
	for _, n := range raw {
		if n == "" || len(n) > maxLabelNameLength || !utf8.ValidString(n) {
			return nil, errors.Newf("invalid label name %q", truncate(n, 64))
		}
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if len(names) > q.cfg.MaxLabelNamesPerRequest {
		return nil, errors.Newf("label_names[] names %d labels, more than the %d allowed per request", len(names), q.cfg.MaxLabelNamesPerRequest)
	}
	return names, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// GRPCCardinalityReader reads cardinality with a strata.Cardinality client, sending the tenants of ctx in gRPC
// metadata.
func GRPCCardinalityReader(c cardinalitypb.CardinalityClient) CardinalityReader {
	return grpcCardinalityReader{c: c}
}

type grpcCardinalityReader struct {
	c cardinalitypb.CardinalityClient
}

func (g grpcCardinalityReader) ReadCardinality(ctx context.Context, req *cardinalitypb.CardinalityRequest) (*cardinalitypb.CardinalityResponse, error) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		return nil, tenancy.ErrNoTenant
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := g.c.HeadCardinality(tenancy.OutgoingContext(ctx, tenants...), req)
	if err != nil {
		return nil, err
	}
	var out *cardinalitypb.CardinalityResponse
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if out == nil {
				return nil, errors.New("empty cardinality answer")
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = res
			continue
		}
		out.Labels = append(out.Labels, res.GetLabels()...)
	}
}
