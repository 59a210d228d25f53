package query

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"

	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// fakeMetadataReader answers with its metadata for the tenant of ctx, or fails with err.
type fakeMetadataReader struct {
	byTenant map[string]map[string][]*metadatapb.Meta
	err      error
}

func (f fakeMetadataReader) ReadMetadata(ctx context.Context, req *metadatapb.MetricMetadataRequest) (*metadatapb.MetricMetadata, error) {
	if f.err != nil {
		return nil, f.err
	}
	tenant, err := tenancy.TenantFromContext(ctx)
	if err != nil {
		return nil, err
	}
	out := &metadatapb.MetricMetadata{Metadata: map[string]*metadatapb.MetricMetadataEntry{}}
	for name, metas := range f.byTenant[tenant] {
		if req.Metric == "" || req.Metric == name {
			out.Metadata[name] = &metadatapb.MetricMetadataEntry{Metas: metas}
		}
	}
	return out, nil
}

func TestMetadataQuerier(t *testing.T) {
	counter := &metadatapb.Meta{Type: "counter", Help: "Requests."}
	counter2 := &metadatapb.Meta{Type: "counter", Help: "Requests handled."}
	gauge := &metadatapb.Meta{Type: "gauge", Help: "Temp.", Unit: "celsius"}
	stores := map[string]fakeMetadataReader{
		// RF 3 over 4 ingesters: each family on 3 of them.
		"i1": {byTenant: map[string]map[string][]*metadatapb.Meta{"a": {"req_total": {counter, counter2}, "temp": {gauge}}, "b": {"b_only": {gauge}}}},
		"i2": {byTenant: map[string]map[string][]*metadatapb.Meta{"a": {"req_total": {counter2, counter}}}},
		"i3": {byTenant: map[string]map[string][]*metadatapb.Meta{"a": {"req_total": {counter}, "temp": {gauge}}}},
		"i4": {byTenant: map[string]map[string][]*metadatapb.Meta{"a": {"temp": {gauge}}}},
	}
	all := map[string][]metadataEntry{
		"req_total": {{Type: "counter", Help: "Requests handled."}, {Type: "counter", Help: "Requests."}},
		"temp":      {{Type: "gauge", Help: "Temp.", Unit: "celsius"}},
	}
	for _, tc := range []struct {
		name                  string
		failing               []string
		zones                 []string
		maxErrors, maxZones   int
		unhealthy             int
		metric                string
		limit, limitPerMetric int
		want                  map[string][]metadataEntry
		wantErr               bool
	}{
		{name: "merged and deduplicated", maxErrors: 1, limit: -1, want: all},
		{name: "metric", maxErrors: 1, limit: -1, metric: "temp", want: map[string][]metadataEntry{"temp": all["temp"]}},
		{name: "limit", maxErrors: 1, limit: 1, want: map[string][]metadataEntry{"req_total": all["req_total"]}},
		{name: "limit 0 is empty, as in Prometheus", maxErrors: 1, limit: 0, want: map[string][]metadataEntry{}},
		{name: "limit_per_metric", maxErrors: 1, limit: -1, limitPerMetric: 1, want: map[string][]metadataEntry{"req_total": all["req_total"][:1], "temp": all["temp"]}},
		{name: "one failure tolerated", failing: []string{"i1"}, maxErrors: 1, limit: -1, want: all},
		{name: "two failures are an error", failing: []string{"i1", "i3"}, maxErrors: 1, limit: -1, wantErr: true},
		{name: "one failure and one unhealthy are an error", failing: []string{"i1"}, unhealthy: 1, maxErrors: 1, limit: -1, wantErr: true},
		{name: "failures in one zone tolerated", failing: []string{"i1", "i4"}, zones: []string{"z1", "z2", "z3", "z1"}, maxZones: 1, limit: -1, want: all},
		{name: "failures in two zones are an error", failing: []string{"i1", "i2"}, zones: []string{"z1", "z2", "z3", "z1"}, maxZones: 1, limit: -1, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := MetadataReplicas{Addrs: []string{"i1", "i2", "i3", "i4"}, Zones: tc.zones, MaxErrors: tc.maxErrors, MaxUnavailableZones: tc.maxZones, Unhealthy: tc.unhealthy}
			q := NewMetadataQuerier(func() (MetadataReplicas, error) { return rs, nil }, func(addr string) (MetadataReader, error) {
				r := stores[addr]
				for _, f := range tc.failing {
					if f == addr {
						r.err = errors.New("unavailable")
					}
				}
				return r, nil
			})
			got, err := q.Metadata(tenancy.WithTenants(context.Background(), []string{"a"}), tc.metric, tc.limit, tc.limitPerMetric)
			if tc.wantErr {
				var se *StorageError
				testutil.Assert(t, errors.As(err, &se), "want a StorageError (503), got %v", err)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, got)
		})
	}
}

func TestMetadataQuerierHTTP(t *testing.T) {
	q := NewMetadataQuerier(func() (MetadataReplicas, error) { return MetadataReplicas{Addrs: []string{"i1"}}, nil },
		func(string) (MetadataReader, error) {
			return fakeMetadataReader{byTenant: map[string]map[string][]*metadatapb.Meta{"a": {"up": {{Type: "gauge", Help: "Up."}}}}}, nil
		})
	for _, tc := range []struct {
		name, tenant, query string
		wantCode            int
		wantBody            string
	}{
		{name: "tenant a", tenant: "a", wantCode: 200, wantBody: `{"status":"success","data":{"up":[{"type":"gauge","help":"Up.","unit":""}]}}`},
		{name: "tenant b", tenant: "b", wantCode: 200, wantBody: `{"status":"success","data":{}}`},
		{name: "bad limit", tenant: "a", query: "limit=x", wantCode: 400, wantBody: `{"status":"error","errorType":"bad_data","error":"limit must be a number"}`},
		{name: "bad limit_per_metric", tenant: "a", query: "limit_per_metric=1.5", wantCode: 400, wantBody: `{"status":"error","errorType":"bad_data","error":"limit_per_metric must be a number"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/metadata?"+tc.query, nil)
			r = r.WithContext(tenancy.WithTenants(r.Context(), []string{tc.tenant}))
			rec := httptest.NewRecorder()
			q.ServeHTTP(rec, r)
			testutil.Equals(t, tc.wantCode, rec.Code)
			testutil.Equals(t, tc.wantBody, rec.Body.String())
		})
	}
}
