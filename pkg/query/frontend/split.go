package frontend

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// Limits are the per-tenant limits the frontend applies (tenancy.Overrides has them).
type Limits interface {
	// MaxQueryParallelism is how many sub-queries of one request run at once (0 counts as 1).
	MaxQueryParallelism(tenant string) int
	// MaxQueryLength is the longest range a query may cover (0: no limit).
	MaxQueryLength(tenant string) time.Duration
	// MaxTenants is how many tenants a federated read may name (0: no limit); the smallest of its tenants'.
	MaxTenants(tenant string) int
}

const (
	// maxPointsPerSeries is the querier's (Prometheus's) bound on (end-start)/step; beyond, its error is the answer.
	maxPointsPerSeries = 11000
	// maxSplitsPerQuery bounds the sub-queries of one range query; a query that would need more (a step longer
	// than the split interval over years) is sent unsplit.
	maxSplitsPerQuery = 1000
)

// stepAlignMiddleware moves a range query's start and end down to multiples of its step (Mimir's
// align_queries_with_step), so that the same dashboard refreshed a few seconds later asks for the same points.
func stepAlignMiddleware(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request) (*Response, error) {
		if !r.IsRange {
			return next.Do(ctx, r)
		}
		start, end := floorDiv(r.Start, r.Step)*r.Step, floorDiv(r.End, r.Step)*r.Step
		if start == r.Start && end == r.End {
			return next.Do(ctx, r)
		}
		return next.Do(ctx, r.WithStartEnd(start, end))
	})
}

// splitMiddleware splits a range query at the multiples of interval (Unix ms, so midnight UTC for 24h), runs
// the parts in parallel (at most the tenant's max_query_parallelism at once) and merges their answers. Each
// part starts a whole number of steps after the query's start, so the parts evaluate exactly the query's points.
// A failed part makes its answer (status and body) the whole answer. Queries that a split could change are sent
// whole: see unsplittable.
func splitMiddleware(interval time.Duration, limits Limits, m *frontendMetrics) Middleware {
	ms := interval.Milliseconds()
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, r *Request) (*Response, error) {
			if ms <= 0 || !r.IsRange || unsplittable(r, limits) {
				return next.Do(ctx, r)
			}
			parts := splitByInterval(r.Start, r.End, r.Step, ms, maxSplitsPerQuery)
			if len(parts) <= 1 {
				return next.Do(ctx, r)
			}
			m.splitQueries.WithLabelValues(r.TenantHeader()).Add(float64(len(parts)))
			reqs := make([]*Request, len(parts))
			for i, p := range parts {
				reqs[i] = r.WithStartEnd(p[0], p[1])
			}
			resps, failed, err := doParallel(ctx, next, reqs, parallelism(r.Tenants, limits))
			if err != nil || failed != nil {
				return failed, err
			}
			return MergeResponses(resps)
		})
	}
}

// splitByInterval returns the [start, end] parts of a query over [start, end] with step, split at multiples of
// interval (all ms), or nil when there would be more than maxParts. Every part but the last ends on the query's
// last point before a multiple of interval; the next part starts one step later.
func splitByInterval(start, end, step, interval int64, maxParts int) [][2]int64 {
	var parts [][2]int64
	for s := start; s <= end; {
		if len(parts) == maxParts {
			return nil
		}
		e := min(lastPointBefore(s, step, interval), end)
		parts = append(parts, [2]int64{s, e})
		s = e + step
	}
	return parts
}

// lastPointBefore returns the last of the points t, t+step, t+2·step, … before the first multiple of interval
// after t (Mimir's nextIntervalBoundary, with floor division for times before 1970).
func lastPointBefore(t, step, interval int64) int64 {
	next := (floorDiv(t, interval) + 1) * interval
	target := next - (next-t)%step
	if target == next {
		target -= step
	}
	return target
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// unsplittable reports whether splitting r could change its answer or its error:
//   - `limit` bounds the series of the whole answer, not of each part;
//   - more than 11,000 points, or longer than max_query_length: the querier's error must be the answer, and each
//     part alone would pass;
//   - `@ start()` / `@ end()` mean the query's start and end, which differ per part (Mimir rewrites them; Strata
//     sends the query whole);
//   - a query the frontend's parser refuses (the querier answers with its error).
func unsplittable(r *Request, limits Limits) bool {
	if v := r.Params.Get("limit"); v != "" && v != "0" {
		return true
	}
	if (r.End-r.Start)/r.Step > maxPointsPerSeries {
		return true
	}
	for _, t := range r.Tenants {
		if l := limits.MaxQueryLength(t); l > 0 && time.Duration(r.End-r.Start)*time.Millisecond > l {
			return true
		}
	}
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Query)
	if err != nil {
		return true
	}
	startOrEnd := false
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			startOrEnd = startOrEnd || n.StartOrEnd != 0
		case *parser.SubqueryExpr:
			startOrEnd = startOrEnd || n.StartOrEnd != 0
		}
		return nil
	})
	return startOrEnd
}

// parallelism is the smallest max_query_parallelism of the tenants, at least 1.
func parallelism(tenants []string, limits Limits) int {
	p := 0
	for _, t := range tenants {
		if l := limits.MaxQueryParallelism(t); l > 0 && (p == 0 || l < p) {
			p = l
		}
	}
	return max(p, 1)
}

// doParallel runs reqs through next, at most n at once. It returns their answers in order, or the first failed
// answer (not 200) or error, which cancels the parts still running.
func doParallel(ctx context.Context, next Handler, reqs []*Request, n int) ([]*Response, *Response, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resps := make([]*Response, len(reqs))
	var (
		mtx      sync.Mutex
		nextIdx  int
		failed   *Response
		firstErr error
		wg       sync.WaitGroup
	)
	take := func() (int, bool) {
		mtx.Lock()
		defer mtx.Unlock()
		if nextIdx == len(reqs) || failed != nil || firstErr != nil {
			return 0, false
		}
		nextIdx++
		return nextIdx - 1, true
	}
	for range min(n, len(reqs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				resp, err := next.Do(ctx, reqs[i])
				mtx.Lock()
				switch {
				case failed != nil || firstErr != nil:
					// A part failed first; this one may have been canceled because of it.
				case err != nil:
					firstErr = err
					cancel()
				case !resp.IsSuccess():
					failed = resp
					cancel()
				default:
					resps[i] = resp
				}
				mtx.Unlock()
			}
		}()
	}
	wg.Wait()
	return resps, failed, firstErr
}
