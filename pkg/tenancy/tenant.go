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
}

// DefaultConfig is multi-tenancy on, as in Mimir.
func DefaultConfig() Config { return Config{MultitenancyEnabled: true} }

// rawFromHTTP returns the tenant header's value: X-Scope-OrgID first, then THANOS-TENANT.
func rawFromHTTP(h http.Header) string {
	if v := h.Get(HeaderOrgID); v != "" {
		return v
	}
	return h.Get(HeaderThanosTenant)
}

// rawFromGRPC returns the tenant from incoming gRPC metadata: x-scope-orgid first, then thanos-tenant.
func rawFromGRPC(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	for _, k := range []string{MetadataOrgID, MetadataThanosTenant} {
		if v := md.Get(k); len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return ""
}

// TenantsFromHTTP returns the validated tenants a request names (one, or several for a federated read).
func (c Config) TenantsFromHTTP(r *http.Request) ([]string, error) {
	if !c.MultitenancyEnabled {
		return []string{AnonymousTenant}, nil
	}
	return ParseTenantIDs(rawFromHTTP(r.Header))
}

// TenantsFromGRPC returns the validated tenants named by incoming gRPC metadata.
func (c Config) TenantsFromGRPC(ctx context.Context) ([]string, error) {
	if !c.MultitenancyEnabled {
		return []string{AnonymousTenant}, nil
	}
	return ParseTenantIDs(rawFromGRPC(ctx))
}

// OutgoingContext returns ctx with the tenants set in outgoing gRPC metadata, for a call to another component.
func OutgoingContext(ctx context.Context, tenants ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, MetadataOrgID, strings.Join(tenants, TenantSeparator))
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
