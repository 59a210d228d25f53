package tenancy

import (
	"fmt"
	"net/http"
)

// IDMaxTenants identifies the refusal of a federated read naming more tenants than max_tenants allows. Mimir has
// no runbook id for it, so its message carries none.
const IDMaxTenants ErrorID = "max-tenants"

// NewMaxTenantsError is the 400 for a federated read ("a|b|c") naming actual tenants where at most limit are
// allowed. The message starts as Mimir's does and names the key that raises the limit.
func NewMaxTenantsError(limit, actual int) *Error {
	return &Error{ID: IDMaxTenants, Status: http.StatusBadRequest, Msg: fmt.Sprintf(
		"too many tenant IDs present in the request. max: %d actual: %d. To adjust the related per-tenant limit, configure max_tenants, or contact your service administrator.",
		limit, actual)}
}

// CheckMaxTenants refuses a request naming more tenants than the smallest max_tenants among them (limits of 0
// do not count). A single tenant is always allowed.
func CheckMaxTenants(tenants []string, maxTenants func(tenant string) int) *Error {
	if len(tenants) <= 1 {
		return nil
	}
	if limit := SmallestLimit(tenants, maxTenants); limit > 0 && len(tenants) > limit {
		return NewMaxTenantsError(limit, len(tenants))
	}
	return nil
}

// SmallestLimit returns the smallest limit above zero among the tenants (0 when none has one): a federated
// read's request-wide limit (max_query_length, max_samples, ...), as Mimir takes it.
func SmallestLimit[T ~int | ~int64](tenants []string, limit func(tenant string) T) T {
	var out T
	for _, t := range tenants {
		if l := limit(t); l > 0 && (out == 0 || l < out) {
			out = l
		}
	}
	return out
}
