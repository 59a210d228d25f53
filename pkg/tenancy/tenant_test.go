package tenancy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestValidateTenantID(t *testing.T) {
	const allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.*'()"
	for _, tc := range []struct {
		name  string
		id    string
		valid bool
	}{
		{name: "simple", id: "team-a", valid: true},
		{name: "150 bytes", id: strings.Repeat("a", 150), valid: true},
		{name: "151 bytes", id: strings.Repeat("a", 151)},
		{name: "empty", id: ""},
		{name: "dot", id: "."},
		{name: "dot dot", id: ".."},
		{name: "three dots are fine", id: "...", valid: true},
		{name: "mimir cluster tenant", id: "__mimir_cluster"},
		{name: "mimir cluster prefix is fine", id: "__mimir_cluster2", valid: true},
		{name: "every allowed character at once", id: allowed, valid: true},
		{name: "federation separator", id: "a|b"},
		{name: "slash", id: "a/b"},
		{name: "backslash", id: `a\b`},
		{name: "colon (dskit metadata)", id: "a:b=c"},
		{name: "space", id: "a b"},
		{name: "hash", id: "a#b"},
		{name: "at", id: "a@b"},
		{name: "percent", id: "a%2Fb"},
		{name: "non-ASCII", id: "équipe"},
		{name: "NUL", id: "a\x00b"},
		{name: "newline", id: "a\nb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTenantID(tc.id)
			if tc.valid {
				testutil.Ok(t, err)
				return
			}
			testutil.NotOk(t, err)
			testutil.Assert(t, errors.Is(err, ErrInvalidTenant), "want ErrInvalidTenant, got %v", err)
		})
	}
	// Each allowed character alone is a valid tenant, except "." which is forbidden alone.
	for _, c := range allowed {
		id := string(c)
		if id == "." {
			testutil.NotOk(t, ValidateTenantID(id))
			continue
		}
		testutil.Ok(t, ValidateTenantID(id), "character %q", c)
	}
	// Every printable ASCII character not in the allowed set is refused.
	for c := byte(0x20); c < 0x7f; c++ {
		if strings.IndexByte(allowed, c) >= 0 {
			continue
		}
		testutil.NotOk(t, ValidateTenantID("a"+string(c)), "character %q", c)
	}
}

func TestParseTenantIDs(t *testing.T) {
	for _, tc := range []struct {
		header    string
		single    string
		singleErr error
		multi     []string
		multiErr  error
	}{
		{header: "a", single: "a", multi: []string{"a"}},
		{header: "", singleErr: ErrNoTenant, multiErr: ErrNoTenant},
		{header: "a|b", singleErr: ErrTooManyTenants, multi: []string{"a", "b"}},
		{header: "b|a|b", singleErr: ErrTooManyTenants, multi: []string{"a", "b"}},
		{header: "a|a", single: "a", multi: []string{"a"}},
		{header: "a|", singleErr: ErrInvalidTenant, multiErr: ErrInvalidTenant},
		{header: "a|..", singleErr: ErrInvalidTenant, multiErr: ErrInvalidTenant},
	} {
		t.Run(tc.header, func(t *testing.T) {
			got, err := ParseTenantID(tc.header)
			if tc.singleErr != nil {
				testutil.Assert(t, errors.Is(err, tc.singleErr), "want %v, got %v", tc.singleErr, err)
			} else {
				testutil.Ok(t, err)
				testutil.Equals(t, tc.single, got)
			}
			gotMulti, err := ParseTenantIDs(tc.header)
			if tc.multiErr != nil {
				testutil.Assert(t, errors.Is(err, tc.multiErr), "want %v, got %v", tc.multiErr, err)
			} else {
				testutil.Ok(t, err)
				testutil.Equals(t, tc.multi, gotMulti)
			}
		})
	}
}

func TestHTTPMiddleware(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        Config
		federation bool
		headers    map[string]string
		multi      http.Header // added with Add, for repeated headers
		wantCode   int
		wantBody   string
	}{
		{name: "no tenant", cfg: DefaultConfig(), wantCode: 401, wantBody: "no org id"},
		{name: "X-Scope-OrgID", cfg: DefaultConfig(), headers: map[string]string{"X-Scope-OrgID": "team-a"}, wantCode: 200, wantBody: "team-a"},
		{name: "THANOS-TENANT", cfg: DefaultConfig(), headers: map[string]string{"THANOS-TENANT": "team-b"}, wantCode: 200, wantBody: "team-b"},
		{name: "X-Scope-OrgID and THANOS-TENANT disagree", cfg: DefaultConfig(), headers: map[string]string{"X-Scope-OrgID": "a", "THANOS-TENANT": "b"}, wantCode: 400, wantBody: `X-Scope-OrgID "a" and THANOS-TENANT "b" name different tenants`},
		{name: "X-Scope-OrgID and THANOS-TENANT agree", cfg: DefaultConfig(), headers: map[string]string{"X-Scope-OrgID": "a", "THANOS-TENANT": "a"}, wantCode: 200, wantBody: "a"},
		{name: "empty X-Scope-OrgID falls back to THANOS-TENANT", cfg: DefaultConfig(), headers: map[string]string{"X-Scope-OrgID": "", "THANOS-TENANT": "b"}, wantCode: 200, wantBody: "b"},
		{name: "two X-Scope-OrgID", cfg: DefaultConfig(), multi: http.Header{"X-Scope-Orgid": {"a", "b"}}, wantCode: 400, wantBody: "X-Scope-OrgID is given more than once"},
		{name: "two equal X-Scope-OrgID", cfg: DefaultConfig(), multi: http.Header{"X-Scope-Orgid": {"a", "a"}}, wantCode: 400, wantBody: "X-Scope-OrgID is given more than once"},
		{name: "two THANOS-TENANT", cfg: DefaultConfig(), multi: http.Header{"Thanos-Tenant": {"a", "b"}}, wantCode: 400, wantBody: "THANOS-TENANT is given more than once"},
		{name: "federation and THANOS-TENANT disagree", cfg: DefaultConfig(), federation: true, headers: map[string]string{"X-Scope-OrgID": "a|b", "THANOS-TENANT": "a"}, wantCode: 400, wantBody: "name different tenants"},
		{name: "invalid tenant", cfg: DefaultConfig(), headers: map[string]string{"X-Scope-OrgID": "../etc"}, wantCode: 400, wantBody: "unsupported character '/'"},
		{name: "too long", cfg: DefaultConfig(), headers: map[string]string{"X-Scope-OrgID": strings.Repeat("x", 151)}, wantCode: 400, wantBody: "too long"},
		{name: "federation refused", cfg: DefaultConfig(), headers: map[string]string{"X-Scope-OrgID": "a|b"}, wantCode: 400, wantBody: "names 2 tenants where one is required"},
		{name: "federation allowed", cfg: DefaultConfig(), federation: true, headers: map[string]string{"X-Scope-OrgID": "b|a"}, wantCode: 200, wantBody: "a,b"},
		{name: "multitenancy off ignores header", cfg: Config{}, headers: map[string]string{"X-Scope-OrgID": "a"}, wantCode: 200, wantBody: "anonymous"},
		{name: "multitenancy off without header", cfg: Config{}, wantCode: 200, wantBody: "anonymous"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.cfg.HTTPMiddleware(tc.federation)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ts, ok := TenantsFromContext(r.Context())
				testutil.Assert(t, ok, "handler reached without tenants")
				_, _ = w.Write([]byte(strings.Join(ts, ",")))
			}))
			req := httptest.NewRequest("GET", "/", nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			for k, vs := range tc.multi {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			testutil.Equals(t, tc.wantCode, rec.Code)
			testutil.Assert(t, strings.Contains(rec.Body.String(), tc.wantBody), "body %q does not contain %q", rec.Body.String(), tc.wantBody)
		})
	}
}

func TestGRPCInterceptors(t *testing.T) {
	exempt := GRPCExempt{"/grpc.health.v1.Health/", "/thanos.info.Info/Info"}
	for _, tc := range []struct {
		name     string
		method   string
		md       metadata.MD
		wantCode codes.Code
		want     string
	}{
		{name: "no tenant", method: "/thanos.Store/Series", wantCode: codes.Unauthenticated},
		{name: "x-scope-orgid", method: "/thanos.Store/Series", md: metadata.Pairs("x-scope-orgid", "a"), want: "a"},
		{name: "thanos-tenant", method: "/thanos.Store/Series", md: metadata.Pairs("thanos-tenant", "b"), want: "b"},
		{name: "invalid", method: "/thanos.Store/Series", md: metadata.Pairs("x-scope-orgid", ".."), wantCode: codes.InvalidArgument},
		{name: "x-scope-orgid and thanos-tenant disagree", method: "/thanos.Store/Series", md: metadata.Pairs("x-scope-orgid", "a", "thanos-tenant", "b"), wantCode: codes.InvalidArgument},
		{name: "x-scope-orgid and thanos-tenant agree", method: "/thanos.Store/Series", md: metadata.Pairs("x-scope-orgid", "a", "thanos-tenant", "a"), want: "a"},
		{name: "x-scope-orgid repeated", method: "/thanos.Store/Series", md: metadata.Pairs("x-scope-orgid", "a", "x-scope-orgid", "b"), wantCode: codes.InvalidArgument},
		{name: "thanos-tenant repeated", method: "/thanos.Store/Series", md: metadata.Pairs("thanos-tenant", "a", "thanos-tenant", "b"), wantCode: codes.InvalidArgument},
		{name: "exempt prefix", method: "/grpc.health.v1.Health/Check", want: ""},
		{name: "exempt with a valid tenant passes it on", method: "/grpc.health.v1.Health/Check", md: metadata.Pairs("x-scope-orgid", "a"), want: "a"},
		{name: "exempt with an invalid tenant is not refused", method: "/grpc.health.v1.Health/Check", md: metadata.Pairs("x-scope-orgid", "a/b"), want: ""},
		{name: "exempt exact", method: "/thanos.info.Info/Info", want: ""},
		{name: "exact exemption is not a prefix", method: "/thanos.info.Info/Other", wantCode: codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.md != nil {
				ctx = metadata.NewIncomingContext(ctx, tc.md)
			}
			got := ""
			handler := func(ctx context.Context, _ any) (any, error) {
				if ts, ok := TenantsFromContext(ctx); ok {
					got = strings.Join(ts, ",")
				}
				return nil, nil
			}
			_, err := DefaultConfig().UnaryServerInterceptor(exempt)(ctx, nil, &grpc.UnaryServerInfo{FullMethod: tc.method}, handler)
			testutil.Equals(t, tc.wantCode, status.Code(err))
			testutil.Equals(t, tc.want, got)

			got = ""
			err = DefaultConfig().StreamServerInterceptor(exempt)(nil, &fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: tc.method},
				func(_ any, ss grpc.ServerStream) error { _, err := handler(ss.Context(), nil); return err })
			testutil.Equals(t, tc.wantCode, status.Code(err))
			testutil.Equals(t, tc.want, got)
		})
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func TestOutgoingContextRoundTrip(t *testing.T) {
	// Setting the tenant again replaces it: the receiving side refuses a repeated tenant key.
	ctx := OutgoingContext(metadata.AppendToOutgoingContext(context.Background(), MetadataThanosTenant, "c"), "x")
	ctx = OutgoingContext(ctx, "a", "b")
	md, ok := metadata.FromOutgoingContext(ctx)
	testutil.Assert(t, ok)
	ts, err := DefaultConfig().TenantsFromGRPC(metadata.NewIncomingContext(context.Background(), md))
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"a", "b"}, ts)
}

func TestTenantFromContext(t *testing.T) {
	_, err := TenantFromContext(context.Background())
	testutil.Assert(t, errors.Is(err, ErrNoTenant))
	_, err = TenantFromContext(WithTenants(context.Background(), []string{"a", "b"}))
	testutil.Assert(t, errors.Is(err, ErrTooManyTenants))
	got, err := TenantFromContext(WithTenants(context.Background(), []string{"a"}))
	testutil.Ok(t, err)
	testutil.Equals(t, "a", got)
}
