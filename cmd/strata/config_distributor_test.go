package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
)

// TestDistributorInstanceLimitsConfig: Mimir's distributor.instance_limits keys, their defaults, file and flags.
func TestDistributorInstanceLimitsConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "strata.yaml")
	testutil.Ok(t, os.WriteFile(file, []byte("distributor:\n  instance_limits:\n    max_inflight_push_requests: 10\n    max_inflight_push_requests_bytes: 1000\n"), 0o600))

	_, _, cfg, err := parseArgs(nil)
	testutil.Ok(t, err)
	testutil.Equals(t, 2000, cfg.Distributor.InstanceLimits.MaxInflightPushRequests)
	testutil.Equals(t, 1<<30, cfg.Distributor.InstanceLimits.MaxInflightPushRequestsBytes)

	_, _, cfg, err = parseArgs([]string{"all", "--config.file=" + file, "--distributor.instance-limits.max-inflight-push-requests=0"})
	testutil.Ok(t, err)
	testutil.Equals(t, 0, cfg.Distributor.InstanceLimits.MaxInflightPushRequests)
	testutil.Equals(t, 1000, cfg.Distributor.InstanceLimits.MaxInflightPushRequestsBytes)

	_, _, _, err = parseArgs([]string{"--distributor.instance-limits.max-inflight-push-requests-bytes=-1"})
	testutil.NotOk(t, err)
	testutil.Assert(t, strings.Contains(err.Error(), "instance_limits.max_inflight_push_requests_bytes must be 0 (no limit) or positive"), err.Error())
}

// TestIngesterInstanceLimitsConfig: Mimir's ingester.instance_limits keys in the config file, the in-flight ones
// and max_ingestion_rate, max_tenants, max_series side by side; defaults; a negative one refused.
func TestIngesterInstanceLimitsConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "strata.yaml")
	testutil.Ok(t, os.WriteFile(file, []byte("ingester:\n  instance_limits:\n    max_inflight_push_requests: 10\n    max_ingestion_rate: 2500.5\n    max_tenants: 3\n    max_series: 1000000\n"), 0o600))

	_, _, cfg, err := parseArgs(nil)
	testutil.Ok(t, err)
	testutil.Equals(t, 30_000, cfg.Ingester.InstanceLimits.MaxInflightPushRequests)
	testutil.Equals(t, 0, cfg.Ingester.InstanceLimits.MaxSeries)

	_, _, cfg, err = parseArgs([]string{"all", "--config.file=" + file})
	testutil.Ok(t, err)
	l := cfg.Ingester.InstanceLimits
	testutil.Equals(t, 10, l.MaxInflightPushRequests)
	testutil.Equals(t, 1<<30, l.MaxInflightPushRequestsBytes) // default kept
	testutil.Equals(t, 2500.5, l.MaxIngestionRate)
	testutil.Equals(t, 3, l.MaxTenants)
	testutil.Equals(t, 1_000_000, l.MaxSeries)

	bad := filepath.Join(dir, "bad.yaml")
	testutil.Ok(t, os.WriteFile(bad, []byte("ingester:\n  instance_limits:\n    max_series: -1\n"), 0o600))
	_, _, _, err = parseArgs([]string{"all", "--config.file=" + bad})
	testutil.NotOk(t, err)
	testutil.Assert(t, strings.Contains(err.Error(), "instance_limits must be 0 (no limit) or positive"), err.Error())
}
