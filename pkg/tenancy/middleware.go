package tenancy

import (
	"context"
	"net/http"
	"strings"

	"github.com/efficientgo/core/errors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// HTTPStatus returns the HTTP status for an error from tenant extraction: 401 when the tenant is missing,
// 400 when it is invalid or when several are named where one is required.
func HTTPStatus(err error) int {
	if errors.Is(err, ErrNoTenant) {
		return http.StatusUnauthorized
	}
	return http.StatusBadRequest
}

// GRPCCode is HTTPStatus for gRPC: Unauthenticated when missing, InvalidArgument otherwise.
func GRPCCode(err error) codes.Code {
	if errors.Is(err, ErrNoTenant) {
		return codes.Unauthenticated
	}
	return codes.InvalidArgument
}

// HTTPMiddleware validates the tenant of every request and stores it in the request's context
// (read it with TenantFromContext / TenantsFromContext). Requests without a valid tenant are answered
// 401 or 400 and never reach next. With allowFederation false a request naming several tenants is refused.
//
// With built-in authentication on (auth.type basic or bearer) the request must also carry a credential
// allowed to write (remote write, OTLP: see AccessOfPath) or read (everything else) every tenant it names; a
// credential with a single tenant needs no tenant header. Otherwise 401 (no or wrong credential) or 403
// (naming the tenant refused).
func (c Config) HTTPMiddleware(allowFederation bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var (
				tenants []string
				err     error
			)
			if c.AuthEnabled() {
				// The credential decides which tenants the request may name (auth.go).
				if tenants, _, err = c.authHTTP(r, allowFederation); err != nil {
					c.httpAuthError(w, err)
					return
				}
			} else {
				tenants, err = c.TenantsFromHTTP(r)
			}
			if err == nil && !allowFederation && len(tenants) > 1 {
				err = errors.Wrapf(ErrTooManyTenants, "%s names %d tenants where one is required", HeaderOrgID, len(tenants))
			}
			if err != nil {
				http.Error(w, err.Error(), HTTPStatus(err))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithTenants(r.Context(), tenants)))
		})
	}
}

// GRPCExempt lists full method names (or prefixes ending in "/") that need no tenant: health checks, and
// Thanos's Info, which a stock Thanos querier calls without one.
type GRPCExempt []string

// healthService is the gRPC health service, which needs no credential even with auth on (load balancers,
// orchestrators).
const healthService = "/grpc.health.v1.Health/"

func (e GRPCExempt) exempt(method string) bool {
	for _, m := range e {
		if method == m || (strings.HasSuffix(m, "/") && strings.HasPrefix(method, m)) {
			return true
		}
	}
	return false
}

func (c Config) grpcContext(ctx context.Context, method string, exempt GRPCExempt) (context.Context, error) {
	if c.AuthEnabled() && !strings.HasPrefix(method, healthService) {
		tenants, trusted, err := c.grpcAuth(ctx, method)
		if err != nil {
			return nil, err
		}
		if !trusted {
			if len(tenants) == 0 {
				return ctx, nil
			}
			return WithTenants(ctx, tenants), nil
		}
	}
	if exempt.exempt(method) {
		// No tenant needed; one that is sent and valid is still passed on (Info then answers for that tenant only).
		if tenants, err := c.TenantsFromGRPC(ctx); err == nil {
			return WithTenants(ctx, tenants), nil
		}
		return ctx, nil
	}
	tenants, err := c.TenantsFromGRPC(ctx)
	if err != nil {
		return nil, status.Error(GRPCCode(err), err.Error())
	}
	return WithTenants(ctx, tenants), nil
}

// UnaryServerInterceptor validates the tenant of every unary call not exempt, as HTTPMiddleware does.
func (c Config) UnaryServerInterceptor(exempt GRPCExempt) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := c.grpcContext(ctx, info.FullMethod, exempt)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor validates the tenant of every streaming call not exempt.
func (c Config) StreamServerInterceptor(exempt GRPCExempt) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := c.grpcContext(ss.Context(), info.FullMethod, exempt)
		if err != nil {
			return err
		}
		return handler(srv, &tenantStream{ServerStream: ss, ctx: ctx})
	}
}

type tenantStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *tenantStream) Context() context.Context { return s.ctx }
