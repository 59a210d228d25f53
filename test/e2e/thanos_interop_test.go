package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	"github.com/stratametrics/strata/pkg/store/storetest"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// thanosBin returns the Thanos binary to check wire compatibility against, from STRATA_THANOS_BIN. Thanos is not
// a dependency of this repository; build it outside the repo (v0.42.x, `go build -tags slicelabels ./cmd/thanos`)
// and run `STRATA_THANOS_BIN=/path/to/thanos go test ./test/e2e -run Thanos -v`.
func thanosBin(t *testing.T) string {
	bin := os.Getenv("STRATA_THANOS_BIN")
	if bin == "" {
		t.Skip("STRATA_THANOS_BIN not set: the Thanos interop check needs a Thanos binary")
	}
	return bin
}

// interopData writes the test series of one tenant into a fresh TSDB: 3 series × 240 samples at 15s, ending now.
func interopData(t *testing.T, dir, team string, now time.Time) *tsdb.DB {
	db, err := tsdb.Open(dir, nil, nil, tsdb.DefaultOptions(), nil)
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = db.Close() })
	start := now.Add(-time.Hour).UnixMilli()
	app := db.Appender(context.Background())
	for i := 0; i < 240; i++ {
		for s, pod := range []string{"p0", "p1", "p2"} {
			_, err := app.Append(0, labels.FromStrings("__name__", "interop_total", "team", team, "pod", pod), start+int64(i)*15000, float64(i*(s+1)))
			testutil.Ok(t, err)
		}
	}
	testutil.Ok(t, app.Commit())
	return db
}

type promMatrix struct {
	Status string `json:"status"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	} `json:"data"`
	Error string `json:"error"`
}

// TestThanosQueryReadsStrataStore: a stock `thanos query` with a Strata TSDBStore as its only endpoint returns
// exactly the samples written, per tenant (THANOS-TENANT reaches the store as gRPC metadata), and nothing of
// another tenant.
func TestThanosQueryReadsStrataStore(t *testing.T) {
	bin := thanosBin(t)
	now := time.Now().Truncate(time.Minute)
	dbs := map[string]*tsdb.DB{
		"team-a": interopData(t, t.TempDir(), "a", now),
		"team-b": interopData(t, t.TempDir(), "b", now),
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	cfg := tenancy.DefaultConfig()
	exempt := tenancy.GRPCExempt{"/thanos.info.Info/", "/grpc.health.v1.Health/"}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(cfg.UnaryServerInterceptor(exempt)), grpc.ChainStreamInterceptor(cfg.StreamServerInterceptor(exempt)))
	st := store.NewTSDBStore(dbMap(dbs), log.NewNopLogger(), store.WithExternalLabels(labels.FromStrings("cluster", "c1")), store.WithComponentType(store.ComponentReceive))
	storepb.RegisterStoreServer(srv, st)
	infopb.RegisterInfoServer(srv, st)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	httpAddr := freeAddr(t)
	startProc(t, "", "thanos query", bin, "query", "--http-address="+httpAddr, "--grpc-address="+freeAddr(t), "--endpoint="+l.Addr().String(), "--log.level=debug")
	waitUntil(t, 60*time.Second, "thanos query ready and sees the store", func() bool {
		code, body := httpGet("http://"+httpAddr+"/api/v1/stores", nil)
		return code == 200 && strings.Contains(body, l.Addr().String()) && strings.Contains(body, "team-a")
	})

	queryRange := func(tenant, query string) promMatrix {
		v := url.Values{"query": {query}, "start": {fmt.Sprint(now.Add(-time.Hour).Unix())}, "end": {fmt.Sprint(now.Unix())}, "step": {"15"}, "dedup": {"false"}}
		code, body := httpGet("http://"+httpAddr+"/api/v1/query_range?"+v.Encode(), map[string]string{"THANOS-TENANT": tenant})
		testutil.Equals(t, 200, code, body)
		var m promMatrix
		testutil.Ok(t, json.Unmarshal([]byte(body), &m))
		return m
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	for _, tenant := range []string{"team-a", "team-b"} {
		for _, query := range []string{`interop_total`, `rate(interop_total[5m])`, `sum by (pod) (interop_total)`, `max_over_time(interop_total{pod="p1"}[7m])`} {
			got := queryRange(tenant, query)
			// The reference: Prometheus's engine over the same TSDB, plus the labels the store attaches.
			rq, err := engine.NewRangeQuery(context.Background(), dbs[tenant], nil, query, now.Add(-time.Hour), now, 15*time.Second)
			testutil.Ok(t, err)
			res := rq.Exec(context.Background())
			testutil.Ok(t, res.Err)
			want := res.Value.(promql.Matrix)
			testutil.Equals(t, len(want), len(got.Data.Result), "%s: %s", tenant, query)
			testutil.Assert(t, len(want) > 0, "%s: %s returned nothing", tenant, query)
			for i, ws := range want {
				gs := got.Data.Result[i]
				wl := ws.Metric.Map()
				if _, ok := wl["pod"]; ok && !strings.HasPrefix(query, "sum") {
					wl["tenant_id"], wl["cluster"] = tenant, "c1"
				}
				testutil.Equals(t, wl, gs.Metric, "%s: %s", tenant, query)
				testutil.Equals(t, len(ws.Floats), len(gs.Values), "%s: %s %v", tenant, query, wl)
				for j, p := range ws.Floats {
					testutil.Equals(t, float64(p.T)/1000, gs.Values[j][0])
					testutil.Equals(t, strconv.FormatFloat(p.F, 'f', -1, 64), gs.Values[j][1], "%s: %s %v at %d", tenant, query, wl, p.T)
				}
			}
		}
		// Another tenant's data is not reachable, whatever the matchers say.
		other := map[string]string{"team-a": "team-b", "team-b": "team-a"}[tenant]
		testutil.Equals(t, 0, len(queryRange(tenant, fmt.Sprintf(`{tenant_id=%q}`, other)).Data.Result))
		testutil.Equals(t, 0, len(queryRange(tenant, fmt.Sprintf(`interop_total{team=%q}`, strings.TrimPrefix(other, "team-"))).Data.Result))
	}
	testutil.Equals(t, 0, len(queryRange("team-c", `{__name__=~".+"}`).Data.Result))

	code, body := httpGet("http://"+httpAddr+"/api/v1/label/pod/values", map[string]string{"THANOS-TENANT": "team-a"})
	testutil.Equals(t, 200, code)
	mustContain(t, body, `"p0"`, `"p1"`, `"p2"`)
	code, body = httpGet("http://"+httpAddr+"/api/v1/label/tenant_id/values", map[string]string{"THANOS-TENANT": "team-b"})
	testutil.Equals(t, 200, code)
	mustContain(t, body, `"data":["team-b"]`)
}

// TestStrataReadsThanosStore: Strata's client and proxy read a block served by a stock `thanos store` over a
// filesystem bucket, and get back exactly the samples in the block.
func TestStrataReadsThanosStore(t *testing.T) {
	bin := thanosBin(t)
	now := time.Now().Truncate(time.Minute)
	tsdbDir := t.TempDir()
	db := interopData(t, tsdbDir, "a", now)
	testutil.Ok(t, db.CompactHead(tsdb.NewRangeHead(db.Head(), db.Head().MinTime(), db.Head().MaxTime())))
	testutil.Equals(t, 1, len(db.Blocks()))
	blockDir := db.Blocks()[0].Dir()
	id := filepath.Base(blockDir)

	bucket := t.TempDir()
	testutil.Ok(t, copyDir(blockDir, filepath.Join(bucket, id)))
	addThanosMeta(t, filepath.Join(bucket, id, "meta.json"), map[string]string{"tenant_id": "team-a", "cluster": "c1"})

	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	startProc(t, "", "thanos store", bin, "store", "--data-dir="+t.TempDir(), "--http-address="+httpAddr, "--grpc-address="+grpcAddr,
		"--objstore.config=type: FILESYSTEM\nconfig:\n  directory: "+bucket+"\n")
	waitUntil(t, 60*time.Second, "thanos store ready", func() bool {
		code, _ := httpGet("http://"+httpAddr+"/-/ready", nil)
		return code == 200
	})

	c, conn, err := store.Dial(grpcAddr)
	testutil.Ok(t, err)
	defer conn.Close()
	testutil.Ok(t, c.RefreshInfo(context.Background(), 10*time.Second))
	testutil.Equals(t, []labels.Labels{labels.FromStrings("cluster", "c1", "tenant_id", "team-a")}, c.LabelSets())

	p := store.NewProxy(func() []store.StoreClient { return []store.StoreClient{c} }, 30*time.Second, log.NewNopLogger(), nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Ok(t, err)
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(tenancy.DefaultConfig().StreamServerInterceptor(nil)))
	storepb.RegisterStoreServer(srv, p)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	pc, pconn, err := store.Dial(l.Addr().String())
	testutil.Ok(t, err)
	defer pconn.Close()

	for name, client := range map[string]storepb.StoreClient{"thanos store directly": c, "through strata's proxy": pc} {
		t.Run(name, func(t *testing.T) {
			res, err := storetest.Series(tenancy.OutgoingContext(context.Background(), "team-a"), client, &storepb.SeriesRequest{
				MinTime: math.MinInt64, MaxTime: math.MaxInt64,
				Matchers: store.MatchersToPB(labels.MustNewMatcher(labels.MatchEqual, "__name__", "interop_total")),
			})
			testutil.Ok(t, err)
			var got []string
			for _, s := range res.Series {
				lset := store.LabelsFromPB(s.Labels)
				samples, err := storetest.SeriesSamples(s)
				testutil.Ok(t, err)
				mult := map[string]int{"p0": 1, "p1": 2, "p2": 3}[lset.Get("pod")]
				for n, smp := range samples {
					testutil.Equals(t, float64(n*mult), smp.V)
				}
				testutil.Equals(t, 240, len(samples))
				got = append(got, lset.String())
			}
			sort.Strings(got)
			testutil.Equals(t, 3, len(got))
			testutil.Equals(t, `{__name__="interop_total", cluster="c1", pod="p0", team="a", tenant_id="team-a"}`, got[0])
		})
	}
}
