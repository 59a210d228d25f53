package query

import (
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"

	"github.com/stratametrics/strata/pkg/store"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    EndpointSpec
		wantErr bool
	}{
		{in: "127.0.0.1:10901", want: EndpointSpec{Addr: "127.0.0.1:10901"}},
		{in: "team-a=127.0.0.1:10901", want: EndpointSpec{Tenant: "team-a", Addr: "127.0.0.1:10901"}},
		{in: "dns:///thanos-store:10901", want: EndpointSpec{Addr: "dns:///thanos-store:10901"}},
		{in: "", wantErr: true},
		{in: "team-a=", wantErr: true},
		{in: "../x=127.0.0.1:1", wantErr: true},
		{in: "..=127.0.0.1:1", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseEndpoint(tc.in)
			if tc.wantErr {
				testutil.NotOk(t, err)
				return
			}
			testutil.Ok(t, err)
			testutil.Equals(t, tc.want, got)
		})
	}
}

// TestEndpointsSelect: tenant-bound endpoints only for their tenant; ingesters only for requests reaching into
// the last query_ingesters_within.
func TestEndpointsSelect(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ingesters := func() ([]string, error) { return []string{"127.0.0.1:1", "127.0.0.1:2"}, nil }
	e, err := NewEndpoints([]EndpointSpec{{Addr: "127.0.0.1:3"}, {Tenant: "team-a", Addr: "127.0.0.1:4"}}, ingesters, 3, 13*time.Hour, log.NewNopLogger())
	testutil.Ok(t, err)
	defer e.Close()
	e.WithClock(func() time.Time { return now })
	names := func(cs []store.StoreClient) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.String())
		}
		return out
	}
	recent, old := now.Add(-time.Hour).UnixMilli(), now.Add(-14*time.Hour).UnixMilli()
	for _, tc := range []struct {
		name       string
		tenants    []string
		minT, maxT int64
		want       []string
	}{
		{"recent, team-a", []string{"team-a"}, old, recent, []string{"127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:1", "127.0.0.1:2"}},
		{"recent, team-b", []string{"team-b"}, old, recent, []string{"127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"}},
		{"old, team-a: no ingesters", []string{"team-a"}, old - 1000, old, []string{"127.0.0.1:3", "127.0.0.1:4"}},
		{"old, team-b", []string{"team-b"}, old - 1000, old, []string{"127.0.0.1:3"}},
		{"info: everything", nil, old, old, []string{"127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:1", "127.0.0.1:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, names(e.Select(tc.tenants, tc.minT, tc.maxT)))
		})
	}
}
