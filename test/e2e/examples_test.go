package e2e

import (
	"testing"
	"time"
)

// TestMonolithicExample starts strata with examples/monolithic as documented and checks that both files apply.
func TestMonolithicExample(t *testing.T) {
	p := startStrata(t, repoRoot(), "all", "--config.file=examples/monolithic/strata.yaml")
	p.waitReady(t, 10*time.Second)
	_, body := httpGet(p.url("/api/v1/user_limits"), map[string]string{"X-Scope-OrgID": "team-a"})
	mustContain(t, body, `"ingestion_rate":50000,`, `"max_global_series_per_user":500000,`)
	_, body = httpGet(p.url("/api/v1/user_limits"), map[string]string{"X-Scope-OrgID": "team-b"})
	mustContain(t, body, `"ingestion_rate":10000,`, `"out_of_order_time_window":"1h"`)
	p.stop(t)
}
