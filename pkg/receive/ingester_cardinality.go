package receive

import (
	"context"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/cardinalitypb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const (
	// DefaultActiveSeriesIdleTimeout is how long after its last sample a series still counts as active for
	// count_method=active (Mimir's -ingester.active-series-metrics-idle-timeout).
	DefaultActiveSeriesIdleTimeout = 10 * time.Minute
	// MaxCardinalityLabelValues bounds the label name and value pairs one cardinality answer holds, whatever the
	// request asks (its max_label_values may only lower it).
	MaxCardinalityLabelValues = 1_000_000
	// cardinalityResponseBatch is how many label values one CardinalityResponse message carries.
	cardinalityResponseBatch = 10_000
	// cardinalityCheckEvery is how many series are counted between two looks at the request's context.
	cardinalityCheckEvery = 1024
)

// errTooManyLabelValues is the cause of a cardinality read refused for holding more label values than allowed.
var errTooManyLabelValues = errors.New("too many label values")

// headCardinality is what one tenant's head holds, before it is put on the wire.
type headCardinality struct {
	series, totalSeries, chunks uint64
	minTime, maxTime            int64
	// values[name][value] is how many series have name=value.
	values map[string]map[string]uint64
	pairs  int
}

// ReadCardinality counts the series of the TSDB heads of the tenants of ctx (put there by tenancy's gRPC
// interceptor, or by an in-process caller with tenancy.WithTenants) by label name and value: only the series
// req.Matchers select, only the label names req.LabelNames lists (all when empty), only the series with a sample
// within the active-series idle timeout for count_method ACTIVE. The head is read through its index (postings,
// then each selected series' labels and chunk metas); the work is O(selected series × their labels) and stops
// when ctx is done. An answer of more label values than req.MaxLabelValues (and MaxCardinalityLabelValues) is
// refused with ResourceExhausted; a request without a tenant with Unauthenticated. Label names are sorted, and
// values within each.
func (i *Ingester) ReadCardinality(ctx context.Context, req *cardinalitypb.CardinalityRequest) (*cardinalitypb.CardinalityResponse, error) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, tenancy.ErrNoTenant.Error())
	}
	ms, err := store.MatchersFromPB(req.GetMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	maxPairs := MaxCardinalityLabelValues
	if m := req.GetMaxLabelValues(); m > 0 && m < int64(maxPairs) {
		maxPairs = int(m)
	}
	c := &headCardinality{minTime: math.MaxInt64, maxTime: math.MinInt64, values: map[string]map[string]uint64{}}
	for _, tenant := range tenants {
		if err := i.tenantCardinality(ctx, tenant, req, ms, maxPairs, c); err != nil {
			switch {
			case errors.Is(err, errTooManyLabelValues):
				return nil, status.Error(codes.ResourceExhausted, err.Error())
			case ctx.Err() != nil:
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return c.response(), nil
}

// tenantCardinality adds one tenant's head to c. A tenant without an open TSDB here adds nothing.
func (i *Ingester) tenantCardinality(ctx context.Context, tenant string, req *cardinalitypb.CardinalityRequest, ms []*labels.Matcher, maxPairs int, c *headCardinality) error {
	u := i.get(tenant)
	if u == nil {
		return nil
	}
	u.closeMtx.RLock()
	defer u.closeMtx.RUnlock()
	if u.closed {
		return nil
	}
	head := u.db.Head()
	var ir tsdb.IndexReader
	if req.GetCountMethod() == cardinalitypb.CountMethod_ACTIVE {
		// The range head's index reader gives a series only the chunks with samples at or after the cutoff.
		idle := i.cfg.ActiveSeriesIdleTimeout
		if idle <= 0 {
			idle = DefaultActiveSeriesIdleTimeout
		}
		ir, _ = tsdb.NewRangeHead(head, i.now().Add(-idle).UnixMilli(), math.MaxInt64).Index()
	} else {
		ir, _ = head.Index()
	}
	defer ir.Close()

	var names map[string]bool
	if len(req.GetLabelNames()) > 0 {
		names = make(map[string]bool, len(req.GetLabelNames()))
		for _, n := range req.GetLabelNames() {
			names[n] = true
		}
	}
	active := req.GetCountMethod() == cardinalitypb.CountMethod_ACTIVE
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		n       int
		tooMany bool
	)
	// forEach calls f with each series p holds that counts (active ones only for ACTIVE), until f or ctx fails.
	forEach := func(p index.Postings, f func(lset labels.Labels, chunks int)) error {
		for p.Next() {
			if n++; n%cardinalityCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if err := ir.Series(p.At(), &builder, &chks); err != nil {
				if errors.Is(err, storage.ErrNotFound) {
					continue // garbage-collected since the postings were read
				}
				return errors.Wrapf(err, "read series of tenant %s", tenant)
			}
			if active && len(chks) == 0 {
				continue
			}
			f(builder.Labels(), len(chks))
			if tooMany {
				return errors.Wrapf(errTooManyLabelValues, "tenant %s's series have more than %d label values (name and value pairs) to count: narrow the selector or ask fewer label names", tenant, maxPairs)
			}
		}
		return p.Err()
	}

	all := func() index.Postings {
		name, value := index.AllPostingsKey()
		p, err := ir.Postings(ctx, name, value)
		if err != nil {
			return index.ErrPostings(err)
		}
		return p
	}
	selected := all()
	if len(ms) > 0 {
		p, err := tsdb.PostingsForMatchers(ctx, ir, ms...)
		if err != nil {
			return errors.Wrapf(err, "select series of tenant %s", tenant)
		}
		selected = p
	}
	var series uint64
	err := forEach(selected, func(lset labels.Labels, nChunks int) {
		series++
		c.chunks += uint64(nChunks)
		lset.Range(func(l labels.Label) {
			if names != nil && !names[l.Name] {
				return
			}
			vs := c.values[l.Name]
			if vs == nil {
				vs = map[string]uint64{}
				c.values[strings.Clone(l.Name)] = vs
			}
			if _, ok := vs[l.Value]; !ok {
				if c.pairs++; c.pairs > maxPairs {
					tooMany = true
					return
				}
				vs[strings.Clone(l.Value)] = 0
			}
			vs[l.Value]++
		})
	})
	if err != nil {
		return err
	}
	c.series += series
	switch {
	case len(ms) == 0:
		c.totalSeries += series
	case !active:
		c.totalSeries += head.NumSeries()
	default:
		var total uint64
		if err := forEach(all(), func(labels.Labels, int) { total++ }); err != nil {
			return err
		}
		c.totalSeries += total
	}
	if head.NumSeries() > 0 {
		c.minTime, c.maxTime = min(c.minTime, head.MinTime()), max(c.maxTime, head.MaxTime())
	}
	return nil
}

// response puts c on the wire in one message: label names sorted, values sorted within each.
func (c *headCardinality) response() *cardinalitypb.CardinalityResponse {
	res := &cardinalitypb.CardinalityResponse{Series: c.series, TotalSeries: c.totalSeries, Chunks: c.chunks, MinTime: c.minTime, MaxTime: c.maxTime}
	names := make([]string, 0, len(c.values))
	for name := range c.values {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		vs := c.values[name]
		lv := &cardinalitypb.LabelValueCounts{Name: name, Values: make([]*cardinalitypb.ValueCount, 0, len(vs))}
		for v, n := range vs {
			lv.Values = append(lv.Values, &cardinalitypb.ValueCount{Value: v, Series: n})
		}
		sort.Slice(lv.Values, func(a, b int) bool { return lv.Values[a].Value < lv.Values[b].Value })
		res.Labels = append(res.Labels, lv)
	}
	return res
}

// IngesterCardinalityServer is the ingester's strata.Cardinality service.
type IngesterCardinalityServer struct {
	cardinalitypb.UnimplementedCardinalityServer
	ing *Ingester
}

// CardinalityServer returns the ingester's strata.Cardinality gRPC service.
func (i *Ingester) CardinalityServer() *IngesterCardinalityServer {
	return &IngesterCardinalityServer{ing: i}
}

// HeadCardinality implements strata.Cardinality/HeadCardinality: ReadCardinality's answer, its totals in the
// first message and its labels in messages of at most cardinalityResponseBatch values.
func (s *IngesterCardinalityServer) HeadCardinality(req *cardinalitypb.CardinalityRequest, srv cardinalitypb.Cardinality_HeadCardinalityServer) error {
	res, err := s.ing.ReadCardinality(srv.Context(), req)
	if err != nil {
		return err
	}
	msg := &cardinalitypb.CardinalityResponse{Series: res.Series, TotalSeries: res.TotalSeries, Chunks: res.Chunks, MinTime: res.MinTime, MaxTime: res.MaxTime}
	n, sent := 0, false
	for _, lv := range res.Labels {
		for vs := lv.Values; len(vs) > 0; {
			k := min(len(vs), cardinalityResponseBatch-n)
			msg.Labels = append(msg.Labels, &cardinalitypb.LabelValueCounts{Name: lv.Name, Values: vs[:k]})
			vs, n = vs[k:], n+k
			if n == cardinalityResponseBatch {
				if err := srv.Send(msg); err != nil {
					return err
				}
				msg, n, sent = &cardinalitypb.CardinalityResponse{}, 0, true
			}
		}
	}
	if n > 0 || !sent {
		return srv.Send(msg)
	}
	return nil
}
