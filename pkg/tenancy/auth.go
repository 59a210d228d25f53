package tenancy

import (
	"context"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// HeaderClusterSecret carries the cluster secret on HTTP calls between components (a query-frontend asking a
	// querier or an ingester's late writes); MetadataClusterSecret on gRPC calls.
	HeaderClusterSecret   = "X-Strata-Cluster-Secret"
	MetadataClusterSecret = "strata-cluster-secret"
	// metadataAuthorization carries a credential on a gRPC call, as the Authorization header on HTTP.
	metadataAuthorization = "authorization"

	minClusterSecretLength = 16
)

// writePaths are the HTTP paths that write a tenant's data: a request to one of them needs write permission
// on its tenant, every other request behind HTTPMiddleware needs read permission.
var writePaths = []string{"/api/v1/push", "/api/v1/receive", "/otlp/v1/metrics"}

// AccessOfPath is the access an HTTP request to path needs: Write for remote write and OTLP (also under a
// prefix such as /prometheus), Read for everything else.
func AccessOfPath(path string) Access {
	path = strings.TrimSuffix(path, "/")
	for _, p := range writePaths {
		if strings.HasSuffix(path, p) {
			return Write
		}
	}
	return Read
}

// AuthEnabled reports whether built-in authentication is on.
func (c Config) AuthEnabled() bool { return c.Type != "" && c.Type != AuthNone }

// Validate checks the auth config: with auth on, a credentials file, a positive reload period and a cluster
// secret are required.
func (c Config) Validate() error {
	switch c.Type {
	case "", AuthNone:
		return nil
	case AuthBasic, AuthBearer:
	default:
		return errors.Newf("auth.type must be none, basic or bearer; got %q", c.Type)
	}
	if c.CredentialsFile == "" {
		return errors.Newf("auth.type %s needs auth.credentials_file", c.Type)
	}
	if c.CredentialsReloadPeriod <= 0 {
		return errors.Newf("auth.credentials_reload_period must be positive, got %s", c.CredentialsReloadPeriod)
	}
	if c.ClusterSecret != "" && c.ClusterSecretFile != "" {
		return errors.New("give auth.cluster_secret or auth.cluster_secret_file, not both")
	}
	if c.ClusterSecret == "" && c.ClusterSecretFile == "" {
		return errors.Newf("auth.type %s needs auth.cluster_secret or auth.cluster_secret_file (components authenticate each other with it)", c.Type)
	}
	return nil
}

// clusterSecret returns the cluster secret: auth.cluster_secret, or the content of auth.cluster_secret_file
// without surrounding white space.
func (c Config) clusterSecret() ([]byte, error) {
	s := c.ClusterSecret
	if c.ClusterSecretFile != "" {
		b, err := os.ReadFile(c.ClusterSecretFile)
		if err != nil {
			return nil, errors.Wrap(err, "read auth.cluster_secret_file")
		}
		s = strings.TrimSpace(string(b))
	}
	if len(s) < minClusterSecretLength {
		return nil, errors.Newf("the cluster secret must be at least %d characters", minClusterSecretLength)
	}
	return []byte(s), nil
}

// WithAuthenticator returns c checking requests with a. Call it once, before the config is handed to the
// components: they copy it.
func (c Config) WithAuthenticator(a *Authenticator) Config {
	c.authn = a
	return c
}

// Authenticator returns the authenticator set by WithAuthenticator (nil when auth is off).
func (c Config) Authenticator() *Authenticator { return c.authn }

// authError is an auth failure answered with status (HTTP) and code (gRPC).
func authStatus(err error) (int, codes.Code) {
	switch {
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, codes.PermissionDenied
	case errors.Is(err, ErrNoCredentials), errors.Is(err, ErrInvalidCredentials), errors.Is(err, ErrNoTenant):
		return http.StatusUnauthorized, codes.Unauthenticated
	default:
		return http.StatusBadRequest, codes.InvalidArgument
	}
}

func outcomeOf(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, ErrNoCredentials):
		return OutcomeNoCredentials
	case errors.Is(err, ErrInvalidCredentials):
		return OutcomeInvalid
	case errors.Is(err, ErrForbidden):
		return OutcomeForbidden
	default:
		return "bad_tenant"
	}
}

var errNotSetUp = errors.New("authentication is configured but not set up (a bug): refusing the request")

// authHTTP authenticates r and resolves its tenants (auth on). A request with the cluster secret is a
// component's: its tenant header is trusted as without auth.
func (c Config) authHTTP(r *http.Request, allowFederation bool) ([]string, *Credential, error) {
	a := c.authn
	if a == nil {
		return nil, nil, errNotSetUp
	}
	if s := r.Header.Get(HeaderClusterSecret); s != "" {
		if !a.ValidClusterSecret(s) {
			a.observe(nil, OutcomeInvalid)
			return nil, nil, errors.Wrap(ErrInvalidCredentials, "wrong cluster secret")
		}
		a.observe(nil, OutcomeInternal)
		tenants, err := c.TenantsFromHTTP(r)
		return tenants, nil, err
	}
	cred, err := a.Authenticate(r.Header.Get("Authorization"))
	if err != nil {
		a.observe(nil, outcomeOf(err))
		return nil, nil, err
	}
	raw, err := rawFromHTTP(r.Header)
	if err == nil {
		var tenants []string
		tenants, err = a.authorize(cred, AccessOfPath(r.URL.Path), raw, allowFederation, c.MultitenancyEnabled)
		if err == nil {
			a.observe(cred, OutcomeOK)
			return tenants, cred, nil
		}
	}
	a.observe(cred, outcomeOf(err))
	return nil, cred, err
}

// httpAuthError answers an auth failure: 401 (with WWW-Authenticate when the credential is missing or wrong),
// 403, or 400.
func (c Config) httpAuthError(w http.ResponseWriter, err error) {
	if errors.Is(err, errNotSetUp) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	code, _ := authStatus(err)
	if errors.Is(err, ErrNoCredentials) || errors.Is(err, ErrInvalidCredentials) {
		w.Header().Set("WWW-Authenticate", c.authn.scheme()+` realm="strata"`)
	}
	http.Error(w, err.Error(), code)
}

// AdminMiddleware guards pages that name tenants or act on the whole process (runtime config, rings, tenant
// lists, flush, profiles): with auth on only a credential that may read every tenant (read: ["*"]) or a
// component with the cluster secret gets through (401 / 403 otherwise). With auth off it changes nothing.
func (c Config) AdminMiddleware() func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if !c.AuthEnabled() {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := c.checkAdmin(r); err != nil {
				c.httpAuthError(w, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func (c Config) checkAdmin(r *http.Request) error {
	a := c.authn
	if a == nil {
		return errNotSetUp
	}
	if s := r.Header.Get(HeaderClusterSecret); s != "" {
		if !a.ValidClusterSecret(s) {
			a.observe(nil, OutcomeInvalid)
			return errors.Wrap(ErrInvalidCredentials, "wrong cluster secret")
		}
		a.observe(nil, OutcomeInternal)
		return nil
	}
	cred, err := a.Authenticate(r.Header.Get("Authorization"))
	if err != nil {
		a.observe(nil, outcomeOf(err))
		return err
	}
	if !cred.IsAdmin() {
		a.observe(cred, OutcomeForbidden)
		return errors.Wrapf(ErrForbidden, "credential %q is not an admin: this page needs read: [\"*\"]", cred.Name)
	}
	a.observe(cred, OutcomeOK)
	return nil
}

// grpcAuth authenticates a gRPC call (auth on). A call with the cluster secret is a component's and is trusted
// as without auth (ok true: go on with the usual tenant handling). Other calls need a credential in the
// "authorization" metadata; they may only read (StoreAPI, Info, metadata), and only the tenants the credential
// may read. The health service needs nothing.
func (c Config) grpcAuth(ctx context.Context, method string) (tenants []string, trusted bool, err error) {
	a := c.authn
	if a == nil {
		return nil, false, status.Error(codes.Internal, errNotSetUp.Error())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if s := md.Get(MetadataClusterSecret); len(s) > 0 {
		if len(s) == 1 && a.ValidClusterSecret(s[0]) {
			a.observe(nil, OutcomeInternal)
			return nil, true, nil
		}
		a.observe(nil, OutcomeInvalid)
		return nil, false, status.Error(codes.Unauthenticated, "wrong cluster secret")
	}
	auth := md.Get(metadataAuthorization)
	if len(auth) == 0 {
		a.observe(nil, OutcomeNoCredentials)
		return nil, false, status.Error(codes.Unauthenticated,
			"authentication required: components send the cluster secret (auth.cluster_secret), clients a credential in the authorization metadata")
	}
	if len(auth) > 1 {
		a.observe(nil, OutcomeInvalid)
		return nil, false, status.Error(codes.Unauthenticated, "authorization metadata given more than once")
	}
	cred, err := a.Authenticate(auth[0])
	if err != nil {
		a.observe(nil, outcomeOf(err))
		_, code := authStatus(err)
		return nil, false, status.Error(code, err.Error())
	}
	if !grpcReadMethod(method) {
		a.observe(cred, OutcomeForbidden)
		return nil, false, status.Errorf(codes.PermissionDenied, "credential %q may not call %s: only components (with the cluster secret) may", cred.Name, method)
	}
	raw, err := rawFromGRPC(ctx)
	if err == nil {
		if raw == "" && method == "/thanos.info.Info/Info" && cred.IsAdmin() {
			a.observe(cred, OutcomeOK)
			return nil, false, nil // an admin's Info of every tenant
		}
		tenants, err = a.authorize(cred, Read, raw, true, c.MultitenancyEnabled)
	}
	a.observe(cred, outcomeOf(err))
	if err != nil {
		_, code := authStatus(err)
		return nil, false, status.Error(code, err.Error())
	}
	return tenants, false, nil
}

// grpcReadMethod reports whether a credential (rather than a component) may call method: the reads of the
// StoreAPI, Info and metadata.
func grpcReadMethod(method string) bool {
	for _, p := range []string{"/thanos.Store/", "/thanos.info.Info/", "/thanos.Metadata/"} {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// ClusterSecretDialOption makes every call of a gRPC client carry the cluster secret (nil when auth is off).
func (c Config) ClusterSecretDialOption() grpc.DialOption {
	if c.authn == nil {
		return nil
	}
	return grpc.WithPerRPCCredentials(clusterSecretCreds{secret: string(c.authn.secret)})
}

type clusterSecretCreds struct{ secret string }

func (s clusterSecretCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{MetadataClusterSecret: s.secret}, nil
}

// RequireTransportSecurity is false: a cluster without TLS still works (the secret then crosses in clear).
func (clusterSecretCreds) RequireTransportSecurity() bool { return false }

// ClusterSecretTransport wraps rt (nil: http.DefaultTransport) so that every request carries the cluster
// secret; rt itself when auth is off.
func (c Config) ClusterSecretTransport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	if c.authn == nil {
		return rt
	}
	return secretTransport{next: rt, secret: string(c.authn.secret)}
}

type secretTransport struct {
	next   http.RoundTripper
	secret string
}

func (t secretTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(HeaderClusterSecret, t.secret)
	return t.next.RoundTrip(r)
}

// ClusterSecretHandler wraps an in-process handler so that requests to it carry the cluster secret, as over
// ClusterSecretTransport (h itself when auth is off).
func (c Config) ClusterSecretHandler(h http.Handler) http.Handler {
	if c.authn == nil {
		return h
	}
	secret := string(c.authn.secret)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.Clone(r.Context())
		r.Header.Set(HeaderClusterSecret, secret)
		h.ServeHTTP(w, r)
	})
}

// the default reload period is kept with the other defaults (DefaultConfig); this guards the zero value of a
// Config built in code.
func (c Config) reloadPeriod() time.Duration {
	if c.CredentialsReloadPeriod <= 0 {
		return 10 * time.Second
	}
	return c.CredentialsReloadPeriod
}
