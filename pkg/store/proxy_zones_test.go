package store

import (
	"math"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store/storepb"
)

// zonedReplicaClient is a replica store in a zone (an ingester with zone-aware replication).
type zonedReplicaClient struct {
	replicaClient
	zone     string
	maxZones int
}

func (r zonedReplicaClient) ReplicaZone() (string, int) { return r.zone, r.maxZones }

// TestProxyZonedFailureBudget: with zone-aware replication, failures of any number of stores within
// maxUnavailableZones zones are absorbed silently (every series is in another zone too); a failure in one more
// zone counts as usual.
func TestProxyZonedFailureBudget(t *testing.T) {
	db := openDB(t, map[string][]sample{`m{s="x"}`: samplesN(5, 1000, func(int) float64 { return 1 })})
	good := serve(t, NewTSDBStore(SingleTenant("t", db), log.NewNopLogger()))
	bad := serve(t, downStore{NewTSDBStore(SingleTenant("t", db), log.NewNopLogger())})
	in := func(c *Client, zone string) StoreClient {
		return zonedReplicaClient{replicaClient: replicaClient{Client: c, group: "ing"}, zone: zone, maxZones: 1}
	}
	for _, tc := range []struct {
		name     string
		stores   []StoreClient
		wantCode codes.Code
	}{
		{"two down in one zone", []StoreClient{in(bad, "a"), in(bad, "a"), in(good, "b"), in(good, "c")}, codes.OK},
		{"one down in each of two zones", []StoreClient{in(bad, "a"), in(bad, "b"), in(good, "c")}, codes.Internal},
		{"no zone: counted against maxFailures (0)", []StoreClient{in(bad, ""), in(good, "b")}, codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := serve(t, newTestProxy(0, tc.stores...))
			series, warnings, err := collect(tenantCtx("t"), p, &storepb.SeriesRequest{MaxTime: math.MaxInt64,
				Matchers: []*storepb.LabelMatcher{eq("__name__", "m")}, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT})
			testutil.Equals(t, tc.wantCode, status.Code(err), "err: %v", err)
			if tc.wantCode == codes.OK {
				testutil.Equals(t, []string{`{__name__="m", s="x", tenant_id="t"}`}, lsetsOf(series))
				testutil.Equals(t, 0, len(warnings), "warnings: %v", warnings)
			}
		})
	}
}
