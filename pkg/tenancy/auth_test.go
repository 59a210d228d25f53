package tenancy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"
)

const testSecret = "0123456789abcdef-cluster"

func bcryptHash(t testing.TB, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	testutil.Ok(t, err)
	return string(h)
}

func basicCredentials(t testing.TB) string {
	return fmt.Sprintf(`credentials:
  - name: team-a-prometheus
    basic_auth: {username: prom-a, password_bcrypt: %q}
    write: [team-a]
    read: [team-a]
  - name: team-b-reader
    basic_auth: {username: grafana-b, password_bcrypt: %q}
    read: [team-b, team-c]
  - name: admin
    basic_auth: {username: admin, password_bcrypt: %q}
    write: ["*"]
    read: ["*"]
`, bcryptHash(t, "pa"), bcryptHash(t, "pb"), bcryptHash(t, "padmin"))
}

func newTestAuth(t testing.TB, authType, creds string) (Config, *Authenticator, *prometheus.Registry, string) {
	file := filepath.Join(t.TempDir(), "credentials.yaml")
	testutil.Ok(t, os.WriteFile(file, []byte(creds), 0o600))
	cfg := DefaultConfig()
	cfg.Type, cfg.CredentialsFile, cfg.ClusterSecret = authType, file, testSecret
	testutil.Ok(t, cfg.Validate())
	reg := prometheus.NewRegistry()
	a, err := NewAuthenticator(cfg, log.NewNopLogger(), reg, time.Now)
	testutil.Ok(t, err)
	return cfg.WithAuthenticator(a), a, reg, file
}

func TestParseCredentialsRefusesBadFiles(t *testing.T) {
	good := bcryptHash(t, "x")
	sum := sha256.Sum256([]byte("tok"))
	tok := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name, typ, file, want string
	}{
		{"empty", AuthBasic, "", "no credential"},
		{"no credentials", AuthBasic, "credentials: []", "no credential"},
		{"no name", AuthBasic, fmt.Sprintf("credentials: [{basic_auth: {username: u, password_bcrypt: %q}, read: [a]}]", good), "has no name"},
		{"duplicate name", AuthBearer, fmt.Sprintf("credentials: [{name: x, bearer_token_sha256: %s, read: [a]}, {name: x, bearer_token_sha256: %s, read: [a]}]", tok, tok), "used twice"},
		{"not bcrypt", AuthBasic, "credentials: [{name: x, basic_auth: {username: u, password_bcrypt: plain}, read: [a]}]", "not a bcrypt hash"},
		{"short sha", AuthBearer, "credentials: [{name: x, bearer_token_sha256: abc, read: [a]}]", "64 hex digits"},
		{"both secrets", AuthBearer, fmt.Sprintf("credentials: [{name: x, bearer_token_sha256: %s, basic_auth: {username: u, password_bcrypt: %q}, read: [a]}]", tok, good), "both"},
		{"wrong kind", AuthBasic, fmt.Sprintf("credentials: [{name: x, bearer_token_sha256: %s, read: [a]}]", tok), "auth.type is basic"},
		{"no secret", AuthBasic, "credentials: [{name: x, read: [a]}]", "neither"},
		{"no tenants", AuthBearer, fmt.Sprintf("credentials: [{name: x, bearer_token_sha256: %s}]", tok), "neither write nor read"},
		{"bad tenant", AuthBearer, fmt.Sprintf("credentials: [{name: x, bearer_token_sha256: %s, read: [\"a/b\"]}]", tok), "invalid tenant"},
		{"unknown key", AuthBearer, fmt.Sprintf("credentials: [{name: x, bearer_token_sha256: %s, read: [a], admin: true}]", tok), "not found"},
		{"same token twice", AuthBearer, fmt.Sprintf("credentials: [{name: x, bearer_token_sha256: %s, read: [a]}, {name: y, bearer_token_sha256: %s, read: [a]}]", tok, tok), "another credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCredentials([]byte(tc.file), tc.typ)
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.want), "error %q does not say %q", err, tc.want)
		})
	}
}

func TestHTTPMiddlewareWithBasicAuth(t *testing.T) {
	cfg, a, _, _ := newTestAuth(t, AuthBasic, basicCredentials(t))
	for _, tc := range []struct {
		name            string
		user, pw        string
		header, path    string
		federation      bool
		wantCode        int
		wantTenants     string
		wantBodyContain string
	}{
		{name: "no credential", path: "/api/v1/push", wantCode: 401, wantBodyContain: "authentication required"},
		{name: "wrong password", user: "prom-a", pw: "nope", path: "/api/v1/push", wantCode: 401, wantBodyContain: "invalid credentials"},
		{name: "unknown user", user: "who", pw: "pa", path: "/api/v1/push", wantCode: 401},
		{name: "sole tenant, no header", user: "prom-a", pw: "pa", path: "/api/v1/push", wantCode: 200, wantTenants: "team-a"},
		{name: "own tenant named", user: "prom-a", pw: "pa", header: "team-a", path: "/api/v1/push", wantCode: 200, wantTenants: "team-a"},
		{name: "other tenant", user: "prom-a", pw: "pa", header: "team-b", path: "/api/v1/push", wantCode: 403, wantBodyContain: `may not write tenant "team-b"`},
		{name: "read-only writes", user: "grafana-b", pw: "pb", header: "team-b", path: "/api/v1/push", wantCode: 403, wantBodyContain: "may not write"},
		{name: "read-only writes, no header", user: "grafana-b", pw: "pb", path: "/api/v1/push", wantCode: 403, wantBodyContain: "may not write any tenant"},
		{name: "read-only writes OTLP", user: "grafana-b", pw: "pb", header: "team-b", path: "/otlp/v1/metrics", wantCode: 403},
		{name: "reader reads", user: "grafana-b", pw: "pb", header: "team-b", path: "/prometheus/api/v1/query", wantCode: 200, wantTenants: "team-b"},
		{name: "reader, several tenants, no header", user: "grafana-b", pw: "pb", path: "/api/v1/query", wantCode: 401, wantBodyContain: "name one in X-Scope-OrgID"},
		{name: "federation allowed", user: "grafana-b", pw: "pb", header: "team-c|team-b", path: "/api/v1/query", federation: true, wantCode: 200, wantTenants: "team-b,team-c"},
		{name: "federation with a forbidden tenant", user: "grafana-b", pw: "pb", header: "team-b|team-a", path: "/api/v1/query", federation: true, wantCode: 403, wantBodyContain: `tenant "team-a"`},
		{name: "federation where not allowed", user: "grafana-b", pw: "pb", header: "team-b|team-c", path: "/api/v1/query", wantCode: 400},
		{name: "admin any tenant", user: "admin", pw: "padmin", header: "zzz", path: "/api/v1/push", wantCode: 200, wantTenants: "zzz"},
		{name: "admin needs a header", user: "admin", pw: "padmin", path: "/api/v1/query", wantCode: 401},
		{name: "invalid tenant", user: "admin", pw: "padmin", header: "a/b", path: "/api/v1/query", wantCode: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			h := cfg.HTTPMiddleware(tc.federation)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				ts, _ := TenantsFromContext(r.Context())
				got = strings.Join(ts, ",")
			}))
			r := httptest.NewRequest(http.MethodPost, tc.path, nil)
			if tc.user != "" {
				r.SetBasicAuth(tc.user, tc.pw)
			}
			if tc.header != "" {
				r.Header.Set(HeaderOrgID, tc.header)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			testutil.Equals(t, tc.wantCode, w.Code, w.Body.String())
			testutil.Equals(t, tc.wantTenants, got)
			testutil.Assert(t, strings.Contains(w.Body.String(), tc.wantBodyContain), "body %q", w.Body.String())
			if w.Code == 401 && tc.user == "" {
				testutil.Equals(t, `Basic realm="strata"`, w.Header().Get("WWW-Authenticate"))
			}
		})
	}
	testutil.Equals(t, 4.0, promtestutil.ToFloat64(a.metrics.requests.WithLabelValues("team-b-reader", OutcomeForbidden)))
	testutil.Equals(t, 2.0, promtestutil.ToFloat64(a.metrics.requests.WithLabelValues("", OutcomeInvalid)))
}

func TestClusterSecretAndAdmin(t *testing.T) {
	cfg, _, _, _ := newTestAuth(t, AuthBasic, basicCredentials(t))
	for _, tc := range []struct {
		name     string
		user, pw string
		secret   string
		wantCode int
	}{
		{name: "nothing", wantCode: 401},
		{name: "cluster secret", secret: testSecret, wantCode: 200},
		{name: "wrong cluster secret", secret: testSecret + "x", wantCode: 401},
		{name: "tenant credential", user: "prom-a", pw: "pa", wantCode: 403},
		{name: "admin", user: "admin", pw: "padmin", wantCode: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/runtime_config", nil)
			if tc.user != "" {
				r.SetBasicAuth(tc.user, tc.pw)
			}
			if tc.secret != "" {
				r.Header.Set(HeaderClusterSecret, tc.secret)
			}
			w := httptest.NewRecorder()
			cfg.AdminMiddleware()(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, r)
			testutil.Equals(t, tc.wantCode, w.Code)
		})
	}
	// The cluster secret lets a component pass any tenant (a query-frontend to its querier).
	r := httptest.NewRequest(http.MethodGet, "/api/v1/query", nil)
	r.Header.Set(HeaderClusterSecret, testSecret)
	r.Header.Set(HeaderOrgID, "team-z")
	w := httptest.NewRecorder()
	cfg.HTTPMiddleware(false)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, r)
	testutil.Equals(t, 200, w.Code)
}

func TestBearerAndReload(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	creds := func(tenant string) string {
		return fmt.Sprintf("credentials:\n  - {name: t1, bearer_token_sha256: %s, write: [%s], read: [%s]}\n", sum("token-1"), tenant, tenant)
	}
	cfg, a, _, file := newTestAuth(t, AuthBearer, creds("team-a"))
	do := func(token, header string) int {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/push", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		if header != "" {
			r.Header.Set(HeaderOrgID, header)
		}
		w := httptest.NewRecorder()
		cfg.HTTPMiddleware(false)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, r)
		return w.Code
	}
	testutil.Equals(t, 200, do("token-1", ""))
	testutil.Equals(t, 401, do("token-2", ""))
	testutil.Equals(t, 403, do("token-1", "team-b"))

	// A changed file is in force at the next reload.
	testutil.Ok(t, os.WriteFile(file, []byte(creds("team-b")), 0o600))
	testutil.Ok(t, a.reload())
	testutil.Equals(t, 200, do("token-1", "team-b"))
	testutil.Equals(t, 403, do("token-1", "team-a"))

	// A bad file keeps the last good one and is counted.
	testutil.Ok(t, os.WriteFile(file, []byte("credentials: [{name: broken}]"), 0o600))
	testutil.NotOk(t, a.reload())
	testutil.Equals(t, 200, do("token-1", "team-b"))
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(a.metrics.reloadFailures))
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(a.metrics.lastSuccessful))
}

// Hashes made by htpasswd ($2y$) and by Go or Python ($2a$, $2b$) are all accepted.
func TestBcryptVariants(t *testing.T) {
	h := bcryptHash(t, "pw")
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		creds := fmt.Sprintf("credentials: [{name: x, basic_auth: {username: u, password_bcrypt: %q}, read: [a]}]", prefix+h[4:])
		_, a, _, _ := newTestAuth(t, AuthBasic, creds)
		c, err := a.Authenticate("Basic dTpwdw==") // u:pw
		testutil.Ok(t, err, prefix)
		testutil.Equals(t, "x", c.Name)
	}
}

func TestAccessOfPath(t *testing.T) {
	for path, want := range map[string]Access{
		"/api/v1/push": Write, "/api/v1/receive": Write, "/otlp/v1/metrics": Write, "/prometheus/api/v1/push": Write,
		"/api/v1/query": Read, "/api/v1/user_stats": Read, "/api/v1/user_limits": Read, "/prometheus/api/v1/series": Read,
	} {
		testutil.Equals(t, want, AccessOfPath(path), path)
	}
}

func TestAuthConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	testutil.Ok(t, cfg.Validate())
	cfg.Type = "ldap"
	testutil.NotOk(t, cfg.Validate())
	cfg.Type = AuthBasic
	testutil.NotOk(t, cfg.Validate()) // no file
	cfg.CredentialsFile = "x"
	testutil.NotOk(t, cfg.Validate()) // no cluster secret
	cfg.ClusterSecret = "short"
	testutil.Ok(t, cfg.Validate())
	_, err := NewAuthenticator(cfg, log.NewNopLogger(), prometheus.NewRegistry(), time.Now)
	testutil.NotOk(t, err) // too short
}
