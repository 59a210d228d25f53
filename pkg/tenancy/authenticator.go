package tenancy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/crypto/bcrypt"
)

// Outcomes of an authentication, the values of strata_auth_requests_total's outcome label.
const (
	OutcomeOK            = "ok"
	OutcomeNoCredentials = "no_credentials"
	OutcomeInvalid       = "invalid_credentials"
	OutcomeForbidden     = "forbidden"
	OutcomeInternal      = "cluster_secret"
)

var (
	// ErrNoCredentials: auth is on and the request carries no credential.
	ErrNoCredentials = errors.New("authentication required: send a basic-auth user or a bearer token (Authorization header)")
	// ErrInvalidCredentials: the credential is unknown, malformed, or its password is wrong.
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrForbidden wraps every refusal of an authenticated credential (403 / PermissionDenied).
	ErrForbidden = errors.New("forbidden")
)

// bcryptCacheSize bounds the cache of verified basic-auth passwords (bcrypt costs tens of milliseconds; a
// Prometheus remote-writes many times a second).
const bcryptCacheSize = 1024

type authMetrics struct {
	requests        *prometheus.CounterVec
	reloadFailures  prometheus.Counter
	lastSuccess     prometheus.Gauge
	lastSuccessful  prometheus.Gauge
	credentialCount prometheus.Gauge
}

func newAuthMetrics(reg prometheus.Registerer) *authMetrics {
	f := promauto.With(reg)
	return &authMetrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_auth_requests_total",
			Help: "Requests checked by the built-in authentication, by credential name (empty: none or unknown) and outcome.",
		}, []string{"credential", "outcome"}),
		reloadFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_auth_credentials_reload_failures_total",
			Help: "Reloads of the credentials file that failed (the last good credentials stay in force).",
		}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_auth_credentials_last_reload_success_timestamp_seconds",
			Help: "When the credentials file was last loaded successfully.",
		}),
		lastSuccessful: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_auth_credentials_last_reload_successful",
			Help: "1 if the last reload of the credentials file succeeded, 0 if it failed.",
		}),
		credentialCount: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_auth_credentials",
			Help: "Credentials in force.",
		}),
	}
}

// Authenticator holds the credentials in force, reloads them from the credentials file, and checks the
// credentials and the cluster secret of requests. It is safe for concurrent use.
type Authenticator struct {
	cfg     Config
	secret  []byte
	logger  log.Logger
	metrics *authMetrics
	now     func() time.Time

	creds    atomic.Pointer[credentialSet]
	lastGood []byte // content of the file in force; only the reload loop touches it

	// dummyHash is compared against when a basic-auth user is unknown, so that an unknown user takes as long
	// as a wrong password.
	dummyHash []byte

	cacheMtx sync.Mutex
	verified map[[sha256.Size]byte]struct{} // sha256(user, password, hash) of passwords bcrypt accepted
}

// NewAuthenticator loads the credentials file of cfg and reads the cluster secret (its file when one is
// configured). It fails when the file is missing or invalid: a process must not start with credentials it
// cannot read. now is the clock of the reload metrics.
func NewAuthenticator(cfg Config, logger log.Logger, reg prometheus.Registerer, now func() time.Time) (*Authenticator, error) {
	secret, err := cfg.clusterSecret()
	if err != nil {
		return nil, err
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("strata-unknown-user"), bcrypt.DefaultCost)
	if err != nil {
		return nil, errors.Wrap(err, "hash the unknown-user password")
	}
	a := &Authenticator{cfg: cfg, secret: secret, dummyHash: dummy, logger: log.With(logger, "component", "auth"), metrics: newAuthMetrics(reg),
		now: now, verified: map[[sha256.Size]byte]struct{}{}}
	if err := a.reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// reload reads the credentials file; when its content changed and is valid it replaces the credentials in
// force. A bad file is logged and counted, and the last good credentials stay.
func (a *Authenticator) reload() error {
	data, err := readBounded(a.cfg.CredentialsFile)
	if err == nil && a.lastGood != nil && bytes.Equal(data, a.lastGood) {
		a.metrics.lastSuccessful.Set(1)
		return nil
	}
	var set *credentialSet
	if err == nil {
		set, err = parseCredentials(data, a.cfg.Type)
	}
	if err != nil {
		err = errors.Wrapf(err, "load credentials file %s", a.cfg.CredentialsFile)
		a.metrics.reloadFailures.Inc()
		a.metrics.lastSuccessful.Set(0)
		return err
	}
	a.creds.Store(set)
	a.lastGood = data
	a.metrics.lastSuccess.Set(float64(a.now().UnixNano()) / 1e9)
	a.metrics.lastSuccessful.Set(1)
	a.metrics.credentialCount.Set(float64(set.count))
	level.Info(a.logger).Log("msg", "credentials loaded", "file", a.cfg.CredentialsFile, "credentials", set.count)
	return nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path) //nolint:gosec // the operator's configured path
	if err != nil {
		return nil, errors.Wrap(err, "open")
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialsFileBytes+1))
	if err != nil {
		return nil, errors.Wrap(err, "read")
	}
	if len(data) > maxCredentialsFileBytes {
		return nil, errors.Newf("larger than %d bytes", maxCredentialsFileBytes)
	}
	return data, nil
}

// Run reloads the credentials file every credentials_reload_period until ctx is done.
func (a *Authenticator) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.reloadPeriod())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := a.reload(); err != nil {
				level.Error(a.logger).Log("msg", "credentials file not reloaded; the last good credentials stay in force", "err", err)
			}
		}
	}
}

// ValidClusterSecret reports whether s is the cluster secret (compared in constant time).
func (a *Authenticator) ValidClusterSecret(s string) bool {
	return s != "" && subtle.ConstantTimeCompare([]byte(s), a.secret) == 1
}

// Authenticate returns the credential of an Authorization header value ("Basic …" or "Bearer …", the scheme
// of auth.type). It fails with ErrNoCredentials when the value is empty, ErrInvalidCredentials otherwise.
func (a *Authenticator) Authenticate(authorization string) (*Credential, error) {
	if authorization == "" {
		return nil, ErrNoCredentials
	}
	scheme, value, _ := strings.Cut(authorization, " ")
	value = strings.TrimSpace(value)
	set := a.creds.Load()
	switch {
	case strings.EqualFold(scheme, "basic") && a.cfg.Type == AuthBasic:
		raw, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return nil, errors.Wrap(ErrInvalidCredentials, "malformed basic auth")
		}
		user, password, ok := strings.Cut(string(raw), ":")
		if !ok {
			return nil, errors.Wrap(ErrInvalidCredentials, "malformed basic auth")
		}
		c := set.byUser[user]
		if c == nil {
			_ = bcrypt.CompareHashAndPassword(a.dummyHash, []byte(password))
			return nil, ErrInvalidCredentials
		}
		if !a.checkPassword(c.BasicAuth, password) {
			return nil, ErrInvalidCredentials
		}
		return c, nil
	case strings.EqualFold(scheme, "bearer") && a.cfg.Type == AuthBearer:
		h := sha256.Sum256([]byte(value))
		var found *Credential
		for _, c := range set.bearer { // every one compared: the time does not tell which matched
			if subtle.ConstantTimeCompare(h[:], c.tokenHash) == 1 {
				found = c
			}
		}
		if found == nil {
			return nil, ErrInvalidCredentials
		}
		return found, nil
	}
	return nil, errors.Wrapf(ErrInvalidCredentials, "expected %s authentication", a.scheme())
}

// scheme is the HTTP authentication scheme of auth.type, for WWW-Authenticate.
func (a *Authenticator) scheme() string {
	if a.cfg.Type == AuthBearer {
		return "Bearer"
	}
	return "Basic"
}

// checkPassword checks password with bcrypt, remembering the passwords it accepted (keyed by a hash of user,
// password and bcrypt hash, so a changed hash in the file is checked again).
func (a *Authenticator) checkPassword(b *BasicAuth, password string) bool {
	key := sha256.Sum256([]byte(b.Username + "\x00" + password + "\x00" + b.PasswordBcrypt))
	a.cacheMtx.Lock()
	_, ok := a.verified[key]
	a.cacheMtx.Unlock()
	if ok {
		return true
	}
	if bcrypt.CompareHashAndPassword([]byte(b.PasswordBcrypt), []byte(password)) != nil {
		return false
	}
	a.cacheMtx.Lock()
	if len(a.verified) >= bcryptCacheSize {
		clear(a.verified)
	}
	a.verified[key] = struct{}{}
	a.cacheMtx.Unlock()
	return true
}

// observe counts one checked request.
func (a *Authenticator) observe(c *Credential, outcome string) {
	name := ""
	if c != nil {
		name = c.Name
	}
	a.metrics.requests.WithLabelValues(name, outcome).Inc()
}

// authorize resolves the tenants of a request of credential c that named raw in its tenant header (raw may be
// empty): a credential with one tenant for the access needs no header; every named tenant must be allowed.
// allowFederation false refuses several tenants.
func (a *Authenticator) authorize(c *Credential, access Access, raw string, allowFederation bool, multitenancy bool) ([]string, error) {
	var tenants []string
	switch {
	case !multitenancy:
		tenants = []string{AnonymousTenant}
	case raw == "" && len(c.tenants(access)) == 0:
		return nil, errors.Wrapf(ErrForbidden, "credential %q may not %s any tenant", c.Name, access)
	case raw == "":
		t, ok := c.soleTenant(access)
		if !ok {
			return nil, errors.Wrapf(ErrNoTenant, "credential %q may %s several tenants: name one in %s", c.Name, access, HeaderOrgID)
		}
		tenants = []string{t}
	default:
		var err error
		if tenants, err = ParseTenantIDs(raw); err != nil {
			return nil, err
		}
	}
	for _, t := range tenants {
		if !c.Allows(access, t) {
			return nil, errors.Wrapf(ErrForbidden, "credential %q may not %s tenant %q", c.Name, access, t)
		}
	}
	if !allowFederation && len(tenants) > 1 {
		return nil, errors.Wrapf(ErrTooManyTenants, "%s names %d tenants where one is required", HeaderOrgID, len(tenants))
	}
	return tenants, nil
}
