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
