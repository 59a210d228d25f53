// Package tenancy is where a request's tenant is found, validated and carried, and where per-tenant limits live.
//
// The tenant is extracted and validated once at the edge (HTTP middleware, gRPC interceptors) and passed
// explicitly from there on. Nothing below the edge builds a storage path from a string that did not pass
// ValidateTenantID.
package tenancy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/grafana/dskit/tenant"
	"google.golang.org/grpc/metadata"
)

const (
	// HeaderOrgID is the Mimir/Cortex tenant header; the canonical one.
	HeaderOrgID = "X-Scope-OrgID"
	// HeaderThanosTenant is the Thanos receive/query tenant header, accepted as well.
	HeaderThanosTenant = "THANOS-TENANT"

	// MetadataOrgID and MetadataThanosTenant are the gRPC metadata keys (lower case, as gRPC requires).
	MetadataOrgID        = "x-scope-orgid"
	MetadataThanosTenant = "thanos-tenant"

	// AnonymousTenant is the tenant of every request when multi-tenancy is disabled.
	AnonymousTenant = "anonymous"

	// MaxTenantIDLength is the longest tenant ID accepted, in bytes.
	MaxTenantIDLength = tenant.MaxTenantIDLength

	// TenantIDLabel is the external label every store attaches to a tenant's series and every block carries in
	// its thanos.labels, as Thanos receive does, so that stock Thanos components keep tenants apart.
	TenantIDLabel = "tenant_id"

	// TenantSeparator separates tenants of a federated read ("a|b").
	TenantSeparator = "|"

	// mimirClusterTenant is reserved by Mimir for cluster-wide data and never a valid tenant.
	mimirClusterTenant = "__mimir_cluster"
)

var (
	// ErrNoTenant is returned when a request names no tenant while multi-tenancy is enabled.
	// Its text is the one Mimir and Cortex answer with, which clients and dashboards match on.
	ErrNoTenant = errors.New("no org id")
	// ErrTooManyTenants is returned when a single-tenant endpoint is asked for several tenants.
	ErrTooManyTenants = errors.New("multiple org IDs present")
	// ErrInvalidTenant wraps every validation failure, for errors.Is.
	ErrInvalidTenant = errors.New("invalid tenant ID")
	// ErrConflictingTenants is returned when tenant headers disagree: one repeated, or X-Scope-OrgID and
	// THANOS-TENANT naming different tenants.
	ErrConflictingTenants = errors.New("conflicting tenant headers")
)

// ValidateTenantID reports whether id is a valid tenant ID: 1 to 150 bytes of a-z A-Z 0-9 ! - _ . * ' ( ),
// and not ".", ".." or "__mimir_cluster". The error wraps ErrInvalidTenant.
func ValidateTenantID(id string) error {
	if id == "" {
		return errors.Wrap(ErrInvalidTenant, "tenant ID is empty")
	}
	// dskit holds Mimir's character table, the length limit and the "." / ".." rule.
	if err := tenant.ValidTenantID(id); err != nil {
		return errors.Wrapf(ErrInvalidTenant, "%s", err.Error())
	}
	if id == mimirClusterTenant {
		return errors.Wrapf(ErrInvalidTenant, "tenant ID %q is reserved", id)
	}
	return nil
}

// ParseTenantIDs parses a tenant header value that may name several tenants separated by "|" and validates each.
// The result is sorted and de-duplicated, so "b|a|a" and "a|b" name the same federation.
func ParseTenantIDs(orgID string) ([]string, error) {
	if orgID == "" {
		return nil, ErrNoTenant
	}
	ids := strings.Split(orgID, TenantSeparator)
	for _, id := range ids {
		if err := ValidateTenantID(id); err != nil {
			return nil, err
		}
	}
	return tenant.NormalizeTenantIDs(ids), nil
}

// ParseTenantID parses a tenant header value that must name exactly one tenant.
func ParseTenantID(orgID string) (string, error) {
	ids, err := ParseTenantIDs(orgID)
	if err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", errors.Wrapf(ErrTooManyTenants, "%q names %d tenants where one is required", orgID, len(ids))
	}
	return ids[0], nil
}

// Config decides how a tenant is found.
type Config struct {
	// MultitenancyEnabled requires a tenant on every request. When false every request is tenant "anonymous",
	// whatever its headers say.
	MultitenancyEnabled bool `yaml:"multitenancy_enabled"`

	// Built-in authentication (auth.go): none, basic or bearer, with the credentials of CredentialsFile.
	Type                    string        `yaml:"type"`
	CredentialsFile         string        `yaml:"credentials_file"`
	CredentialsReloadPeriod time.Duration `yaml:"credentials_reload_period"`
	// ClusterSecret (or the content of ClusterSecretFile) authenticates components to each other.
	ClusterSecret     string `yaml:"cluster_secret"`
	ClusterSecretFile string `yaml:"cluster_secret_file"`
	// MetricsRequireAuth puts /metrics behind an admin credential (or the cluster secret) too.
	MetricsRequireAuth bool `yaml:"metrics_require_auth"`

	authn *Authenticator // set by WithAuthenticator when Type is not none
}

// DefaultConfig is multi-tenancy on, as in Mimir, and built-in authentication off.
func DefaultConfig() Config {
	return Config{MultitenancyEnabled: true, Type: AuthNone, CredentialsReloadPeriod: 10 * time.Second}
}

// rawFromHTTP returns the tenant header's value, from X-Scope-OrgID or THANOS-TENANT. Headers that disagree are
// refused rather than one of them winning: a header repeated, or both headers naming different tenants (a gateway
// that sets THANOS-TENANT must not let a client choose its tenant with X-Scope-OrgID).
func rawFromHTTP(h http.Header) (string, error) {
	return oneTenantValue(h.Values(HeaderOrgID), HeaderOrgID, h.Values(HeaderThanosTenant), HeaderThanosTenant)
}

// rawFromGRPC is rawFromHTTP for incoming gRPC metadata (x-scope-orgid, thanos-tenant).
func rawFromGRPC(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", nil
	}
	return oneTenantValue(md.Get(MetadataOrgID), MetadataOrgID, md.Get(MetadataThanosTenant), MetadataThanosTenant)
}

// oneTenantValue returns the single tenant value named by the canonical key and the Thanos key: empty values are
// ignored, a key given more than once is an error, and so are the two keys naming different values.
func oneTenantValue(orgIDs []string, orgIDKey string, thanos []string, thanosKey string) (string, error) {
	orgID, err := oneValue(orgIDs, orgIDKey)
	if err != nil {
		return "", err
	}
	th, err := oneValue(thanos, thanosKey)
	if err != nil {
		return "", err
	}
	switch {
	case orgID == "":
		return th, nil
	case th != "" && th != orgID:
		return "", errors.Wrapf(ErrConflictingTenants, "%s %s and %s %s name different tenants", orgIDKey, describe(orgID), thanosKey, describe(th))
	}
	return orgID, nil
}

func oneValue(vs []string, key string) (string, error) {
	v := ""
	for _, x := range vs {
		if x == "" {
			continue
		}
		if v != "" {
			return "", errors.Wrapf(ErrConflictingTenants, "%s is given more than once", key)
		}
		v = x
	}
	return v, nil
}

// TenantsFromHTTP returns the validated tenants a request names (one, or several for a federated read).
func (c Config) TenantsFromHTTP(r *http.Request) ([]string, error) {
	if !c.MultitenancyEnabled {
		return []string{AnonymousTenant}, nil
	}
	raw, err := rawFromHTTP(r.Header)
	if err != nil {
		return nil, err
	}
	return ParseTenantIDs(raw)
}

// TenantsFromGRPC returns the validated tenants named by incoming gRPC metadata.
func (c Config) TenantsFromGRPC(ctx context.Context) ([]string, error) {
	if !c.MultitenancyEnabled {
		return []string{AnonymousTenant}, nil
	}
	raw, err := rawFromGRPC(ctx)
	if err != nil {
		return nil, err
	}
	return ParseTenantIDs(raw)
}

// OutgoingContext returns ctx with the tenants set in outgoing gRPC metadata, for a call to another component.
// A tenant already set there is replaced (never sent twice, which the receiving side refuses).
func OutgoingContext(ctx context.Context, tenants ...string) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Delete(MetadataThanosTenant)
	md.Set(MetadataOrgID, strings.Join(tenants, TenantSeparator))
	return metadata.NewOutgoingContext(ctx, md)
}

type tenantsKey struct{}

// WithTenants returns ctx carrying already validated tenants. Only the edge (middleware, interceptors) calls it.
func WithTenants(ctx context.Context, tenants []string) context.Context {
	return context.WithValue(ctx, tenantsKey{}, tenants)
}

// TenantsFromContext returns the tenants the edge validated for this request, if any.
func TenantsFromContext(ctx context.Context) ([]string, bool) {
	ts, ok := ctx.Value(tenantsKey{}).([]string)
	return ts, ok && len(ts) > 0
}

// TenantFromContext returns the single tenant the edge validated for this request. It fails with
// ErrTooManyTenants for a federated request and ErrNoTenant when the request did not pass the edge.
func TenantFromContext(ctx context.Context) (string, error) {
	ts, ok := TenantsFromContext(ctx)
	if !ok {
		return "", ErrNoTenant
	}
	if len(ts) != 1 {
		return "", errors.Wrapf(ErrTooManyTenants, "request names %d tenants where one is required", len(ts))
	}
	return ts[0], nil
}

// describe is used in error messages: a header value can be anything, so it is quoted and cut.
func describe(s string) string {
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return fmt.Sprintf("%q", s)
}
