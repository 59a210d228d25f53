package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/cardinalitypb"
	"github.com/stratametrics/strata/pkg/store/infopb"
	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/metadatapb"
	"github.com/stratametrics/strata/pkg/store/storepb"
	storeprompb "github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

const e2eClusterSecret = "e2e-cluster-secret-0123456789"

// authUsers are the basic-auth users of the auth tests: user → password.
var authUsers = map[string]string{"prom-a": "pass-a", "grafana-b": "pass-b", "admin": "pass-admin"}

// basicCredentialsYAML is a credentials file: prom-a writes and reads team-a, grafana-b only reads team-b and
// team-c, admin writes and reads everything.
func basicCredentialsYAML(t *testing.T) string {
	t.Helper()
	h := func(u string) string {
		b, err := bcrypt.GenerateFromPassword([]byte(authUsers[u]), bcrypt.MinCost)
		testutil.Ok(t, err)
		return string(b)
	}
	return fmt.Sprintf(`credentials:
  - name: team-a-prometheus
    basic_auth: {username: prom-a, password_bcrypt: %q}
    write: [team-a]
    read: [team-a]
  - name: team-b-grafana
    basic_auth: {username: grafana-b, password_bcrypt: %q}
    read: [team-b, team-c]
  - name: admin
    basic_auth: {username: admin, password_bcrypt: %q}
    write: ["*"]
    read: ["*"]
`, h("prom-a"), h("grafana-b"), h("admin"))
}

func sha256Hex(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

// bearerCredentialsYAML: token-a writes and reads writeTenant, token-b reads team-b.
func bearerCredentialsYAML(writeTenant string) string {
	return fmt.Sprintf(`credentials:
  - name: token-a
    bearer_token_sha256: %s
    write: [%s]
    read: [%s]
  - name: token-b
    bearer_token_sha256: %s
    read: [team-b]
`, sha256Hex("secret-token-a"), writeTenant, writeTenant, sha256Hex("secret-token-b"))
}

// authorization is the Authorization value of who: a user of authUsers ("user:wrong" for a wrong password), a
// bearer token ("tok:<token>"), or "" for none.
func authorization(who string) string {
	switch {
	case who == "" || who == "secret" || who == "badsecret":
		return ""
	case strings.HasPrefix(who, "tok:"):
		return "Bearer " + strings.TrimPrefix(who, "tok:")
	case strings.HasSuffix(who, ":wrong"):
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(strings.TrimSuffix(who, ":wrong")+":wrong"))
	}
	pw, ok := authUsers[who]
	if !ok {
		pw = "whatever"
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(who+":"+pw))
}

// authHeaders are the HTTP headers of who naming tenant.
func authHeaders(who, tenant string) map[string]string {
	h := map[string]string{}
	if a := authorization(who); a != "" {
		h["Authorization"] = a
	}
	switch who {
	case "secret":
		h[tenancy.HeaderClusterSecret] = e2eClusterSecret
	case "badsecret":
		h[tenancy.HeaderClusterSecret] = e2eClusterSecret + "-wrong"
	}
	if tenant != "" {
		h[tenancy.HeaderOrgID] = tenant
	}
	return h
}

// authHTTP does method on url with who's headers; a POST to a write path carries one remote-write series.
func authHTTP(t *testing.T, client *http.Client, method, u, who, tenant string) (int, string) {
	t.Helper()
	var body io.Reader
	headers := authHeaders(who, tenant)
	pu, err := url.Parse(u)
	testutil.Ok(t, err)
	switch {
	case method == http.MethodPost && pu.Path == "/otlp/v1/metrics":
		// An empty OTLP export request (zero bytes is a valid one): 200 once through auth.
		body = bytes.NewReader(nil)
		headers["Content-Type"] = "application/x-protobuf"
	case method == http.MethodPost && tenancy.AccessOfPath(pu.Path) == tenancy.Write:
		raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "auth_e2e"}, {Name: "who", Value: strings.ReplaceAll(who, ":", "_")}},
			Samples: []prompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 1}},
		}}}).Marshal()
		testutil.Ok(t, err)
		body = bytes.NewReader(snappy.Encode(nil, raw))
		headers["Content-Encoding"] = "snappy"
		headers["Content-Type"] = "application/x-protobuf"
		headers["X-Prometheus-Remote-Write-Version"] = "0.1.0"
	}
	req, err := http.NewRequest(method, u, body)
	testutil.Ok(t, err)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	testutil.Ok(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// authGRPC calls method on the gRPC server at addr as who (credential in the authorization metadata, or the
// cluster secret) naming tenant, and returns the call's code.
func authGRPC(t *testing.T, addr, method, who, tenant string, opts ...grpc.DialOption) codes.Code {
	t.Helper()
	_, conn, err := store.Dial(addr, opts...)
	testutil.Ok(t, err)
	defer conn.Close()
	ctx := context.Background()
	if tenant != "" {
		ctx = tenancy.OutgoingContext(ctx, tenant)
	}
	if a := authorization(who); a != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
	}
	switch who {
	case "secret":
		ctx = metadata.AppendToOutgoingContext(ctx, tenancy.MetadataClusterSecret, e2eClusterSecret)
	case "badsecret":
		ctx = metadata.AppendToOutgoingContext(ctx, tenancy.MetadataClusterSecret, "wrong-"+e2eClusterSecret)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	all := []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__name__", Value: ".+"}}
	switch method {
	case "Series":
		s, err := storepb.NewStoreClient(conn).Series(ctx, &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: all})
		if err == nil {
			for err == nil {
				_, err = s.Recv()
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		return status.Code(err)
	case "LabelNames":
		_, err = storepb.NewStoreClient(conn).LabelNames(ctx, &storepb.LabelNamesRequest{Start: math.MinInt64, End: math.MaxInt64})
	case "LabelValues":
		_, err = storepb.NewStoreClient(conn).LabelValues(ctx, &storepb.LabelValuesRequest{Label: "__name__", Start: math.MinInt64, End: math.MaxInt64})
	case "Info":
		_, err = infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
	case "Metadata":
		var s metadatapb.Metadata_MetricMetadataClient
		s, err = metadatapb.NewMetadataClient(conn).MetricMetadata(ctx, &metadatapb.MetricMetadataRequest{})
		for err == nil {
			_, err = s.Recv()
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
	case "RemoteWrite":
		_, err = storepb.NewWriteableStoreClient(conn).RemoteWrite(ctx, &storepb.WriteRequest{Tenant: tenant, Timeseries: []*storeprompb.TimeSeries{{
			Labels:  []*labelpb.Label{{Name: "__name__", Value: "auth_grpc_e2e"}},
			Samples: []*storeprompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 1}},
		}}})
	case "HeadCardinality":
		var s grpc.ServerStreamingClient[cardinalitypb.CardinalityResponse]
		s, err = cardinalitypb.NewCardinalityClient(conn).HeadCardinality(ctx, &cardinalitypb.CardinalityRequest{Matchers: all, MaxLabelValues: 1000})
		for err == nil {
			_, err = s.Recv()
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
	case "Health":
		var resp *healthpb.HealthCheckResponse
		resp, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return codes.Unavailable
		}
	default:
		t.Fatalf("unknown gRPC method %s", method)
	}
	return status.Code(err)
}

// authRow is one row of the entry-point table: who (see authorization) naming tenant calls target's endpoint.
type authRow struct {
	who, tenant string
	target      string // a, b (the separate ingester), c (bearer)
	call        string // "GET /path", "POST /path" or "grpc <Method>"
	want        string // an HTTP status or a gRPC code
}

// TestAuthEntryPoints: with auth on, every HTTP and gRPC entry point of a small cluster — `strata all` (a, basic
// auth, /metrics guarded) with a separate ingester (b) in its ring, and a `strata all` with bearer tokens (c) —
// answers each (credential, tenant header, endpoint, method) as the table says. The distributor of a writes to
// ingester b and its querier reads b over gRPC with the cluster secret; a client without it cannot talk to b.
func TestAuthEntryPoints(t *testing.T) {
	dir := t.TempDir()
	basicFile, bearerFile, secretFile := filepath.Join(dir, "basic.yaml"), filepath.Join(dir, "bearer.yaml"), filepath.Join(dir, "secret")
	testutil.Ok(t, os.WriteFile(basicFile, []byte(basicCredentialsYAML(t)), 0o600))
	testutil.Ok(t, os.WriteFile(bearerFile, []byte(bearerCredentialsYAML("team-a")), 0o600))
	testutil.Ok(t, os.WriteFile(secretFile, []byte(e2eClusterSecret+"\n"), 0o600))
	common := []string{"--auth.credentials-file=" + basicFile, "--auth.cluster-secret-file=" + secretFile, "--auth.type=basic",
		"--auth.credentials-reload-period=1s"}
	ml := newMemberlist(t, 2)
	a := startStrata(t, dir, append(append([]string{"all", "--ingester.id=ing-a", "--auth.metrics-require-auth"}, common...), ml.flags(0)...)...)
	b := startStrata(t, dir, append(append([]string{"ingester", "--ingester.id=ing-b"}, common...), ml.flags(1)...)...)
	c := startStrata(t, dir, "all", "--auth.type=bearer", "--auth.credentials-file="+bearerFile, "--auth.cluster-secret-file="+secretFile,
		"--auth.credentials-reload-period=1s")
	for _, p := range []*proc{a, b, c} {
		p.waitReady(t, 45*time.Second)
	}
	client := &http.Client{Timeout: 20 * time.Second}
	waitUntil(t, 30*time.Second, "ingester b in a's ring", func() bool {
		code, body := authHTTP(t, client, "GET", a.url("/ingester/ring"), "admin", "")
		return code == 200 && strings.Contains(body, b.grpcAddr) && strings.Contains(body, "ACTIVE")
	})
	procs := map[string]*proc{"a": a, "b": b, "c": c}

	rows := []authRow{
		// Remote write: write permission on the tenant.
		{"", "", "a", "POST /api/v1/push", "401"},
		{"", "team-a", "a", "POST /api/v1/push", "401"},
		{"prom-a:wrong", "", "a", "POST /api/v1/push", "401"},
		{"nobody", "team-a", "a", "POST /api/v1/push", "401"},
		{"prom-a", "", "a", "POST /api/v1/push", "204"},
		{"prom-a", "team-a", "a", "POST /api/v1/push", "204"},
		{"prom-a", "team-b", "a", "POST /api/v1/push", "403"},
		{"grafana-b", "team-b", "a", "POST /api/v1/push", "403"},
		{"grafana-b", "", "a", "POST /api/v1/push", "403"},
		{"admin", "team-z", "a", "POST /api/v1/push", "204"},
		{"admin", "", "a", "POST /api/v1/push", "401"},
		{"prom-a", "team-a", "a", "POST /api/v1/receive", "204"},
		{"grafana-b", "team-b", "a", "POST /api/v1/receive", "403"},
		{"secret", "team-q", "a", "POST /api/v1/push", "204"},
		{"badsecret", "team-a", "a", "POST /api/v1/push", "401"},
		// Query API: read permission.
		{"", "team-a", "a", "GET /prometheus/api/v1/query?query=up", "401"},
		{"prom-a", "", "a", "GET /prometheus/api/v1/query?query=up", "200"},
		{"prom-a", "team-a", "a", "GET /api/v1/query?query=up", "200"},
		{"prom-a", "team-b", "a", "GET /prometheus/api/v1/query?query=up", "403"},
		{"prom-a:wrong", "team-a", "a", "GET /prometheus/api/v1/query?query=up", "401"},
		{"grafana-b", "team-b", "a", "GET /prometheus/api/v1/query?query=up", "200"},
		{"grafana-b", "team-c", "a", "GET /prometheus/api/v1/query?query=up", "200"},
		{"grafana-b", "", "a", "GET /prometheus/api/v1/query?query=up", "401"},
		{"grafana-b", "team-b|team-a", "a", "GET /prometheus/api/v1/query?query=up", "403"},
		{"admin", "team-b", "a", "GET /prometheus/api/v1/query?query=up", "200"},
		{"prom-a", "team-a", "a", "POST /prometheus/api/v1/query?query=up", "200"},
		{"prom-a", "team-a", "a", "GET /prometheus/api/v1/query_range?query=up&start=0&end=60&step=15", "200"},
		{"prom-a", "team-a", "a", "GET /prometheus/api/v1/series?match[]=up", "200"},
		{"prom-a", "team-b", "a", "GET /prometheus/api/v1/series?match[]=up", "403"},
		{"prom-a", "team-a", "a", "GET /prometheus/api/v1/labels", "200"},
		{"grafana-b", "team-a", "a", "GET /prometheus/api/v1/labels", "403"},
		{"prom-a", "team-a", "a", "GET /prometheus/api/v1/label/__name__/values", "200"},
		{"prom-a", "team-a", "a", "GET /prometheus/api/v1/metadata", "200"},
		{"", "team-a", "a", "GET /prometheus/api/v1/metadata", "401"},
		// OTLP: write permission, as remote write.
		{"prom-a", "team-a", "a", "POST /otlp/v1/metrics", "200"},
		{"prom-a", "", "a", "POST /otlp/v1/metrics", "200"},
		{"", "team-a", "a", "POST /otlp/v1/metrics", "401"},
		{"prom-a:wrong", "team-a", "a", "POST /otlp/v1/metrics", "401"},
		{"prom-a", "team-b", "a", "POST /otlp/v1/metrics", "403"},
		{"grafana-b", "team-b", "a", "POST /otlp/v1/metrics", "403"},
		// Federated reads: every tenant named must be readable; writes naming several stay 400.
		{"grafana-b", "team-b|team-c", "a", "GET /prometheus/api/v1/query?query=up", "200"},
		{"grafana-b", "team-b|team-c", "a", "GET /prometheus/api/v1/labels", "200"},
		{"admin", "team-a|team-b", "a", "GET /prometheus/api/v1/series?match[]=up", "200"},
		{"prom-a", "team-a|team-b", "a", "GET /prometheus/api/v1/series?match[]=up", "403"},
		{"admin", "team-a|team-b", "a", "POST /api/v1/push", "400"},
		{"prom-a", "team-a|team-b", "a", "POST /api/v1/push", "403"},
		// Cardinality: read permission.
		{"prom-a", "team-a", "a", "GET /api/v1/cardinality/label_names", "200"},
		{"prom-a", "team-a", "a", "GET /prometheus/api/v1/cardinality/label_values?label_names[]=__name__", "200"},
		{"grafana-b", "team-a", "a", "GET /api/v1/cardinality/label_names", "403"},
		{"prom-a", "team-a", "a", "GET /api/v1/status/tsdb", "200"},
		{"", "team-a", "a", "GET /api/v1/status/tsdb", "401"},
		// Per-tenant stats and limits: read permission.
		{"prom-a", "team-a", "a", "GET /api/v1/user_stats", "200"},
		{"grafana-b", "team-a", "a", "GET /api/v1/user_stats", "403"},
		{"", "team-a", "a", "GET /api/v1/user_stats", "401"},
		{"prom-a", "", "a", "GET /api/v1/user_limits", "200"},
		{"grafana-b", "team-b", "a", "GET /api/v1/user_limits", "200"},
		{"prom-a", "team-b", "a", "GET /api/v1/user_limits", "403"},
		{"", "", "a", "GET /api/v1/user_limits", "401"},
		// Pages naming tenants or acting on the process: an admin, or the cluster secret.
		{"", "", "a", "GET /runtime_config", "401"},
		{"prom-a", "", "a", "GET /runtime_config", "403"},
		{"admin", "", "a", "GET /runtime_config", "200"},
		{"", "", "a", "GET /ingester/ring", "401"},
		{"prom-a", "", "a", "GET /ingester/ring", "403"},
		{"admin", "", "a", "GET /distributor/ha_tracker", "200"},
		{"grafana-b", "", "a", "GET /distributor/ha_tracker", "403"},
		{"prom-a", "", "a", "GET /store-gateway/tenants", "403"},
		{"admin", "", "a", "GET /store-gateway/tenants", "200"},
		{"", "", "a", "GET /compactor/tenants", "401"},
		{"admin", "", "a", "GET /compactor/tenants", "200"},
		{"", "", "a", "GET /metrics", "401"},
		{"prom-a", "", "a", "GET /metrics", "403"},
		{"admin", "", "a", "GET /metrics", "200"},
		{"", "", "b", "GET /metrics", "200"}, // auth.metrics-require-auth off on b
		{"", "", "a", "GET /debug/pprof/", "401"},
		{"admin", "", "a", "GET /debug/pprof/", "200"},
		{"", "", "a", "GET /ready", "200"},
		{"", "", "b", "POST /ingester/flush", "401"},
		{"prom-a", "team-a", "b", "POST /ingester/flush", "403"},
		{"", "", "b", "GET /ingester/late_writes?tenant=team-a", "401"},
		{"secret", "", "b", "GET /ingester/late_writes?tenant=team-a", "200"},
		// gRPC of the separate ingester: components with the cluster secret; credentials may only read.
		{"", "team-a", "b", "grpc Series", "Unauthenticated"},
		{"badsecret", "team-a", "b", "grpc Series", "Unauthenticated"},
		{"secret", "team-a", "b", "grpc Series", "OK"},
		{"prom-a", "team-a", "b", "grpc Series", "OK"},
		{"prom-a", "", "b", "grpc Series", "OK"},
		{"prom-a", "team-b", "b", "grpc Series", "PermissionDenied"},
		{"prom-a:wrong", "team-a", "b", "grpc Series", "Unauthenticated"},
		{"", "team-a", "b", "grpc RemoteWrite", "Unauthenticated"},
		{"prom-a", "team-a", "b", "grpc RemoteWrite", "PermissionDenied"},
		{"admin", "team-a", "b", "grpc RemoteWrite", "PermissionDenied"},
		{"secret", "team-a", "b", "grpc RemoteWrite", "OK"},
		{"", "", "b", "grpc Info", "Unauthenticated"},
		{"admin", "", "b", "grpc Info", "OK"},
		{"", "", "b", "grpc Health", "OK"},
		{"", "team-a", "b", "grpc LabelNames", "Unauthenticated"},
		{"grafana-b", "team-b", "b", "grpc LabelValues", "OK"},
		{"", "team-a", "b", "grpc Metadata", "Unauthenticated"},
		{"secret", "team-a", "b", "grpc Metadata", "OK"},
		{"", "team-a", "b", "grpc HeadCardinality", "Unauthenticated"},
		{"prom-a", "team-a", "b", "grpc HeadCardinality", "PermissionDenied"}, // components only
		{"secret", "team-a", "b", "grpc HeadCardinality", "OK"},
		// gRPC of `strata all`.
		{"", "team-a", "a", "grpc Series", "Unauthenticated"},
		{"secret", "team-a", "a", "grpc Series", "OK"},
		{"prom-a", "team-a", "a", "grpc Series", "OK"},
		{"grafana-b", "team-a", "a", "grpc Series", "PermissionDenied"},
		{"", "", "a", "grpc Info", "Unauthenticated"},
		{"", "team-a", "a", "grpc RemoteWrite", "Unauthenticated"},
		// Bearer tokens.
		{"tok:secret-token-a", "", "c", "POST /api/v1/push", "204"},
		{"tok:secret-token-a", "team-b", "c", "POST /api/v1/push", "403"},
		{"tok:secret-token-b", "team-b", "c", "POST /api/v1/push", "403"},
		{"tok:secret-token-b", "", "c", "GET /prometheus/api/v1/query?query=up", "200"},
		{"tok:secret-token-b", "team-a", "c", "GET /prometheus/api/v1/query?query=up", "403"},
		{"tok:wrong-token", "", "c", "POST /api/v1/push", "401"},
		{"", "team-a", "c", "POST /api/v1/push", "401"},
		{"prom-a", "team-a", "c", "POST /api/v1/push", "401"}, // basic auth where bearer is configured
		{"tok:secret-token-a", "team-a", "c", "grpc Series", "OK"},
		{"tok:secret-token-b", "team-a", "c", "grpc Series", "PermissionDenied"},
	}
	testutil.Assert(t, len(rows) >= 60, "%d rows", len(rows))
	var failed []string
	for _, r := range rows {
		p := procs[r.target]
		var got, body string
		if m, ok := strings.CutPrefix(r.call, "grpc "); ok {
			got = authGRPC(t, p.grpcAddr, m, r.who, r.tenant).String()
		} else {
			method, path, _ := strings.Cut(r.call, " ")
			var code int
			code, body = authHTTP(t, client, method, p.url(path), r.who, r.tenant)
			got = fmt.Sprint(code)
		}
		line := fmt.Sprintf("%-20s %-14s %s %-70s → %s", r.who, r.tenant, r.target, r.call, got)
		if got != r.want {
			failed = append(failed, fmt.Sprintf("%s, want %s: %.200s", line, r.want, body))
		}
		t.Log(line)
	}
	testutil.Assert(t, len(failed) == 0, "%d of %d rows not as expected:\n%s", len(failed), len(rows), strings.Join(failed, "\n"))

	// The writes of a reached the separate ingester over authenticated gRPC, and a's querier reads them back.
	got := readStore(t, b.grpcAddr, "team-a", grpc.WithPerRPCCredentials(secretCreds{}))
	testutil.Assert(t, len(got) > 0, "no series of team-a on ingester b")
	code, body := authHTTP(t, client, "GET", a.url("/prometheus/api/v1/query?query=count(auth_e2e)"), "prom-a", "")
	testutil.Equals(t, 200, code)
	testutil.Assert(t, strings.Contains(body, `"result":[{`), "no result: %s", body)

	// Metrics name credentials, never secrets.
	code, body = authHTTP(t, client, "GET", a.url("/metrics"), "admin", "")
	testutil.Equals(t, 200, code)
	testutil.Assert(t, strings.Contains(body, `strata_auth_requests_total{credential="team-b-grafana",outcome="forbidden"}`), "no forbidden count of team-b-grafana")
	for _, s := range []string{"pass-a", "pass-admin", e2eClusterSecret} {
		testutil.Assert(t, !strings.Contains(body, s), "/metrics shows a secret")
	}
	_, cfgBody := httpGet(a.url("/config"), nil)
	testutil.Assert(t, !strings.Contains(cfgBody, e2eClusterSecret), "/config shows the cluster secret")

	t.Run("credentials file reloaded at runtime", func(t *testing.T) {
		push := func(tenant string) int {
			code, _ := authHTTP(t, client, "POST", c.url("/api/v1/push"), "tok:secret-token-a", tenant)
			return code
		}
		testutil.Equals(t, 204, push("team-a"))
		testutil.Equals(t, 403, push("team-x"))
		testutil.Ok(t, os.WriteFile(bearerFile, []byte(bearerCredentialsYAML("team-x")), 0o600))
		waitUntil(t, 15*time.Second, "token-a may write team-x", func() bool { return push("team-x") == 204 })
		testutil.Equals(t, 403, push("team-a"))
		testutil.Equals(t, 204, push("")) // its sole tenant is now team-x

		// A bad file: the last good credentials stay, the failure is counted.
		testutil.Ok(t, os.WriteFile(bearerFile, []byte("credentials:\n  - name: broken\n    bearer_token_sha256: not-hex\n    read: [x]\n"), 0o600))
		waitUntil(t, 15*time.Second, "a failed reload counted", func() bool {
			return metricValue(t, c.url("/metrics"), "strata_auth_credentials_reload_failures_total") >= 1
		})
		testutil.Equals(t, 0.0, metricValue(t, c.url("/metrics"), "strata_auth_credentials_last_reload_successful"))
		testutil.Assert(t, metricValue(t, c.url("/metrics"), "strata_auth_credentials_last_reload_success_timestamp_seconds") > 0, "no last success")
		testutil.Equals(t, 204, push("team-x"))
		testutil.Equals(t, 403, push("team-a"))
		testutil.Assert(t, strings.Contains(c.out.String(), "the last good credentials stay in force"), "the bad file is not logged")

		// Fixed again: in force.
		testutil.Ok(t, os.WriteFile(bearerFile, []byte(bearerCredentialsYAML("team-a")), 0o600))
		waitUntil(t, 15*time.Second, "token-a may write team-a again", func() bool { return push("team-a") == 204 })
		testutil.Equals(t, 1.0, metricValue(t, c.url("/metrics"), "strata_auth_credentials_last_reload_successful"))
	})
}

// secretCreds sends the e2e cluster secret on every call, as a component does.
type secretCreds struct{}

func (secretCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{tenancy.MetadataClusterSecret: e2eClusterSecret}, nil
}
func (secretCreds) RequireTransportSecurity() bool { return false }

// metricValue returns the value of an unlabelled metric on a /metrics page (NaN when absent).
func metricValue(t *testing.T, metricsURL, name string) float64 {
	t.Helper()
	_, body := httpGet(metricsURL, nil)
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			testutil.Ok(t, err)
			return f
		}
	}
	return math.NaN()
}

// TestAuthExample starts strata with examples/auth as documented: the example credentials work as their
// comments say.
func TestAuthExample(t *testing.T) {
	p := startStrata(t, repoRoot(), "all", "--config.file=examples/auth/strata.yaml")
	p.waitReady(t, 30*time.Second)
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path, user, pw, tenant string) int {
		req, err := http.NewRequest(method, p.url(path), nil)
		testutil.Ok(t, err)
		req.SetBasicAuth(user, pw)
		if tenant != "" {
			req.Header.Set(tenancy.HeaderOrgID, tenant)
		}
		resp, err := client.Do(req)
		testutil.Ok(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	testutil.Equals(t, 200, do("GET", "/api/v1/user_limits", "prom-a", "change-me-a", ""))
	testutil.Equals(t, 401, do("GET", "/api/v1/user_limits", "prom-a", "wrong", ""))
	testutil.Equals(t, 200, do("GET", "/api/v1/user_limits", "grafana-b", "change-me-grafana", "team-c"))
	testutil.Equals(t, 403, do("POST", "/api/v1/push", "grafana-b", "change-me-grafana", "team-b"))
	testutil.Equals(t, 200, do("GET", "/runtime_config", "admin", "change-me-admin", ""))
	p.stop(t)
}

// TestAuthQueryFrontendToQuerier: a standalone query-frontend authenticates the client, then calls its querier
// with the cluster secret (the querier itself refuses a client without a credential).
func TestAuthQueryFrontendToQuerier(t *testing.T) {
	dir := t.TempDir()
	credsFile, secretFile := filepath.Join(dir, "basic.yaml"), filepath.Join(dir, "secret")
	testutil.Ok(t, os.WriteFile(credsFile, []byte(basicCredentialsYAML(t)), 0o600))
	testutil.Ok(t, os.WriteFile(secretFile, []byte(e2eClusterSecret), 0o600))
	auth := []string{"--auth.type=basic", "--auth.credentials-file=" + credsFile, "--auth.cluster-secret-file=" + secretFile}
	ml := newMemberlist(t, 1)
	q := startStrata(t, dir, append(append([]string{"querier"}, auth...), ml.flags(0)...)...)
	q.waitReady(t, 30*time.Second)
	f := startStrata(t, dir, append([]string{"query-frontend", "--query-frontend.downstream-url=http://" + q.httpAddr}, auth...)...)
	f.waitReady(t, 30*time.Second)
	client := &http.Client{Timeout: 20 * time.Second}
	for _, r := range []struct {
		p           *proc
		who, tenant string
		path        string
		want        int
	}{
		{f, "prom-a", "", "/prometheus/api/v1/query?query=vector(1)", 200},
		{f, "prom-a", "", "/prometheus/api/v1/query_range?query=vector(1)&start=0&end=600&step=60", 200},
		{f, "", "team-a", "/prometheus/api/v1/query?query=vector(1)", 401},
		{f, "prom-a", "team-b", "/prometheus/api/v1/query?query=vector(1)", 403},
		{q, "", "team-a", "/prometheus/api/v1/query?query=vector(1)", 401},
		{q, "secret", "team-a", "/prometheus/api/v1/query?query=vector(1)", 200},
	} {
		code, body := authHTTP(t, client, "GET", r.p.url(r.path), r.who, r.tenant)
		testutil.Equals(t, r.want, code, "%s %s %s: %s", r.who, r.tenant, r.path, body)
	}
}
