package query

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"

	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// MetadataReader reads the metric metadata one store holds for the tenants of ctx (tenancy.WithTenants): an
// ingester in the same process, or a thanos.Metadata gRPC client (GRPCMetadataReader).
type MetadataReader interface {
	ReadMetadata(ctx context.Context, req *metadatapb.MetricMetadataRequest) (*metadatapb.MetricMetadata, error)
}

// MetadataReplicas are the stores a metadata read asks, and which failures it survives: each metric family's
// metadata is on replication-factor stores, so the answer is complete when at most MaxErrors stores failed
// (Unhealthy ones, not asked, included), or, with zone awareness (MaxUnavailableZones > 0), when the failed
// stores are in at most MaxUnavailableZones zones (each unhealthy one counted as a zone of its own).
type MetadataReplicas struct {
	Addrs               []string
	Zones               []string // zone of Addrs[i]; empty without zone awareness
	Unhealthy           int
	MaxErrors           int
	MaxUnavailableZones int
}

// tolerates reports whether the read is complete despite the failures of the stores at failed.
func (r MetadataReplicas) tolerates(failed []int) bool {
	if len(failed)+r.Unhealthy <= r.MaxErrors {
		return true
	}
	if r.MaxUnavailableZones <= 0 || len(r.Zones) != len(r.Addrs) {
		return false
	}
	zones := map[string]bool{}
	for _, i := range failed {
		zones[r.Zones[i]] = true
	}
	return len(zones)+r.Unhealthy <= r.MaxUnavailableZones
}

// MetadataQuerier answers the Prometheus API's /api/v1/metadata from the ingesters of the ring (Mimir keeps
// metadata in the ingesters only): it asks every one, merges their answers, and fails only when more of them
// failed than the replication tolerates. It is safe for concurrent use.
type MetadataQuerier struct {
	replicas func() (MetadataReplicas, error)
	dial     func(addr string) (MetadataReader, error)
	shards   *ingesterShards // nil: every tenant is read from every ingester (endpoints_shard.go)
	now      func() time.Time
}

// NewMetadataQuerier returns a querier over the stores replicas names, reached with dial.
func NewMetadataQuerier(replicas func() (MetadataReplicas, error), dial func(addr string) (MetadataReader, error)) *MetadataQuerier {
	return &MetadataQuerier{replicas: replicas, dial: dial, now: time.Now}
}

// metadataEntry is one metadata of a metric family, in Prometheus's JSON.
type metadataEntry struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// Metadata returns the tenants' metadata (ctx must carry them) by metric family: only metric's when it is not
// empty; at most limit families when limit >= 0 and at most limitPerMetric entries per family when it is > 0
// (Prometheus's parameters). Families and entries are sorted, so the same data gives the same answer.
func (q *MetadataQuerier) Metadata(ctx context.Context, metric string, limit, limitPerMetric int) (map[string][]metadataEntry, error) {
	res := map[string][]metadataEntry{}
	if limit == 0 {
		return res, nil
	}
	rs, err := q.tenantReplicas(ctx)
	if err != nil {
		return nil, &StorageError{Err: errors.Wrap(err, "list the ingesters for a metadata read")}
	}
	req := &metadatapb.MetricMetadataRequest{Metric: metric, Limit: -1}
	if limit > 0 {
		// Each ingester's first limit families (by name) hold the merged answer's first limit families.
		req.Limit = int32(min(limit, 1<<31-1))
	}

	var (
		mtx    sync.Mutex
		merged = map[string]map[metadataEntry]bool{}
		failed []int
		errs   []error
		wg     sync.WaitGroup
	)
	for i, addr := range rs.Addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			md, err := q.read(ctx, addr, req)
			mtx.Lock()
			defer mtx.Unlock()
			if err != nil {
				failed = append(failed, i)
				errs = append(errs, errors.Wrapf(err, "read metadata from ingester %s", addr))
				return
			}
			for name, e := range md.GetMetadata() {
				set := merged[name]
				if set == nil {
					set = map[metadataEntry]bool{}
					merged[name] = set
				}
				for _, m := range e.GetMetas() {
					set[metadataEntry{Type: m.GetType(), Help: m.GetHelp(), Unit: m.GetUnit()}] = true
				}
			}
		}()
	}
	wg.Wait()
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

	names := make([]string, 0, len(merged))
	for name := range merged {
		names = append(names, name)
	}
	sort.Strings(names)
	if limit > 0 && len(names) > limit {
		names = names[:limit]
	}
	for _, name := range names {
		entries := make([]metadataEntry, 0, len(merged[name]))
		for e := range merged[name] {
			entries = append(entries, e)
		}
		sort.Slice(entries, func(a, b int) bool {
			x, y := entries[a], entries[b]
			if x.Type != y.Type {
				return x.Type < y.Type
			}
			if x.Help != y.Help {
				return x.Help < y.Help
			}
			return x.Unit < y.Unit
		})
		if limitPerMetric > 0 && len(entries) > limitPerMetric {
			entries = entries[:limitPerMetric]
		}
		res[name] = entries
	}
	return res, nil
}

func (q *MetadataQuerier) read(ctx context.Context, addr string, req *metadatapb.MetricMetadataRequest) (*metadatapb.MetricMetadata, error) {
	r, err := q.dial(addr)
	if err != nil {
		return nil, err
	}
	return r.ReadMetadata(ctx, req)
}

// ServeHTTP answers GET/POST /api/v1/metadata as Prometheus does (parameters metric, limit, limit_per_metric).
// It expects the tenant in the request context (tenancy's HTTP middleware).
func (q *MetadataQuerier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, typ, msg string) {
		writeJSON(w, code, fmt.Sprintf(`{"status":"error","errorType":%q,"error":%q}`, typ, msg))
	}
	if _, ok := tenancy.TenantsFromContext(r.Context()); !ok { // several: a federated read, the union of theirs
		fail(http.StatusUnauthorized, "bad_data", tenancy.ErrNoTenant.Error())
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "bad_data", err.Error())
		return
	}
	limit, limitPerMetric := -1, -1
	for name, dst := range map[string]*int{"limit": &limit, "limit_per_metric": &limitPerMetric} {
		if s := r.FormValue(name); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil {
				fail(http.StatusBadRequest, "bad_data", name+" must be a number")
				return
			}
			*dst = v
		}
	}
	md, err := q.Metadata(r.Context(), r.FormValue("metric"), limit, limitPerMetric)
	if err != nil {
		if r.Context().Err() != nil {
			fail(http.StatusServiceUnavailable, "canceled", err.Error())
			return
		}
		fail(http.StatusServiceUnavailable, "unavailable", err.Error())
		return
	}
	body, err := json.Marshal(struct {
		Status string                     `json:"status"`
		Data   map[string][]metadataEntry `json:"data"`
	}{Status: "success", Data: md})
	if err != nil {
		fail(http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, string(body))
}

// GRPCMetadataReader reads metadata with a thanos.Metadata client, sending the tenants of ctx in gRPC metadata.
func GRPCMetadataReader(c metadatapb.MetadataClient) MetadataReader { return grpcMetadataReader{c: c} }

type grpcMetadataReader struct{ c metadatapb.MetadataClient }

func (g grpcMetadataReader) ReadMetadata(ctx context.Context, req *metadatapb.MetricMetadataRequest) (*metadatapb.MetricMetadata, error) {
	tenants, ok := tenancy.TenantsFromContext(ctx)
	if !ok {
		return nil, tenancy.ErrNoTenant
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := g.c.MetricMetadata(tenancy.OutgoingContext(ctx, tenants...), req)
	if err != nil {
		return nil, err
	}
	out := &metadatapb.MetricMetadata{Metadata: map[string]*metadatapb.MetricMetadataEntry{}}
	for {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if w := res.GetWarning(); w != "" {
			return nil, errors.Newf("store warning: %s", w)
		}
		for name, e := range res.GetMetadata().GetMetadata() {
			if prev, ok := out.Metadata[name]; ok {
				prev.Metas = append(prev.Metas, e.GetMetas()...)
				continue
			}
			out.Metadata[name] = e
		}
	}
}
