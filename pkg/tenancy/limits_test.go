package tenancy

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
)

func TestDefaultLimits(t *testing.T) {
	// DESIGN.md §9: every key with its Mimir default.
	o := NewOverrides(DefaultLimits(), nil)
	testutil.Equals(t, 10000.0, o.IngestionRate("t"))
	testutil.Equals(t, 200000, o.IngestionBurstSize("t"))
	testutil.Equals(t, 150000, o.MaxGlobalSeriesPerUser("t"))
	testutil.Equals(t, 0, o.MaxGlobalSeriesPerMetric("t"))
	testutil.Equals(t, 30, o.MaxLabelNamesPerSeries("t"))
	testutil.Equals(t, 1024, o.MaxLabelNameLength("t"))
	testutil.Equals(t, 2048, o.MaxLabelValueLength("t"))
	testutil.Equals(t, time.Duration(0), o.OutOfOrderTimeWindow("t"))
	testutil.Equals(t, 10*time.Minute, o.CreationGracePeriod("t"))
	testutil.Equals(t, time.Duration(0), o.CompactorBlocksRetentionPeriod("t"))
	testutil.Equals(t, 10*time.Minute, o.MaxCacheFreshness("t"))
	testutil.Equals(t, 0, o.IngestionTenantShardSize("t"))
	testutil.Ok(t, DefaultLimits().Validate())
}

func TestLoadRuntimeOverrides(t *testing.T) {
	defaults := DefaultLimits()
	defaults.IngestionRate = 500 // a config-file default, not Mimir's
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, ro *RuntimeOverrides)
	}{
		{name: "empty file", yaml: "", check: func(t *testing.T, ro *RuntimeOverrides) { testutil.Equals(t, 0, len(ro.Overrides)) }},
		{name: "partial override keeps other defaults", yaml: "overrides:\n  team-a:\n    max_global_series_per_user: 7\n    out_of_order_time_window: 1h\n",
			check: func(t *testing.T, ro *RuntimeOverrides) {
				l := ro.Overrides["team-a"]
				testutil.Equals(t, 7, l.MaxGlobalSeriesPerUser)
				testutil.Equals(t, model.Duration(time.Hour), l.OutOfOrderTimeWindow)
				testutil.Equals(t, 500.0, l.IngestionRate)
				testutil.Equals(t, 30, l.MaxLabelNamesPerSeries)
			}},
		{name: "unknown key", yaml: "overrides:\n  team-a:\n    ingestion_rat: 1\n", wantErr: "field ingestion_rat not found"},
		{name: "unknown top-level key", yaml: "overides:\n  team-a: {}\n", wantErr: "field overides not found"},
		{name: "invalid tenant", yaml: "overrides:\n  \"a/b\":\n    ingestion_rate: 1\n", wantErr: "unsupported character '/'"},
		{name: "negative limit", yaml: "overrides:\n  a:\n    ingestion_rate: -1\n", wantErr: "ingestion_rate must not be negative"},
		{name: "warning ratio over 1", yaml: "overrides:\n  a:\n    limits_warning_ratio: 1.5\n", wantErr: "limits_warning_ratio must be between 0 (no warnings) and 1"},
		{name: "not yaml", yaml: "overrides: [", wantErr: "parse runtime config"},
		{name: "otel keys", yaml: "overrides:\n  a:\n    promote_otel_resource_attributes: [k8s.pod.name, cloud.region]\n    otel_metric_suffixes_enabled: true\n    otel_convert_delta_to_cumulative: true\n",
			check: func(t *testing.T, ro *RuntimeOverrides) {
				l := ro.Overrides["a"]
				testutil.Equals(t, []string{"k8s.pod.name", "cloud.region"}, l.PromoteOTelResourceAttributes)
				testutil.Assert(t, l.OTelMetricSuffixesEnabled && l.OTelConvertDeltaToCumulative && !l.OTelNativeDeltaIngestion, "%+v", l)
				testutil.Assert(t, l.OTelLabelNameUnderscoreSanitization && l.OTelLabelNamePreserveMultipleUnderscores, "Mimir's defaults kept: %+v", l)
			}},
		{name: "both delta settings", yaml: "overrides:\n  a:\n    otel_native_delta_ingestion: true\n    otel_convert_delta_to_cumulative: true\n",
			wantErr: "otel_native_delta_ingestion and otel_convert_delta_to_cumulative cannot both be enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ro, err := LoadRuntimeOverrides([]byte(tc.yaml), defaults)
			if tc.wantErr != "" {
				testutil.NotOk(t, err)
				testutil.Assert(t, strings.Contains(err.Error(), tc.wantErr), "error %q does not contain %q", err, tc.wantErr)
				return
			}
			testutil.Ok(t, err)
			tc.check(t, ro)
		})
	}
}

// TestRuntimeOverridesReload changes a real file under a running manager: the new override applies without a
// restart, a broken file keeps the last good overrides and sets the reload-success metric to 0.
func TestRuntimeOverridesReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "runtime.yaml")
	write := func(content string) {
		// Write to a temp name and rename, as config management tools do, so the manager never reads half a file.
		tmp := file + ".tmp"
		testutil.Ok(t, os.WriteFile(tmp, []byte(content), 0o600))
		testutil.Ok(t, os.Rename(tmp, file))
	}
	write("overrides:\n  team-a:\n    ingestion_rate: 100\n")

	reg := prometheus.NewRegistry()
	m, err := NewRuntimeOverridesManager(RuntimeConfig{File: file, ReloadPeriod: 20 * time.Millisecond}, DefaultLimits(), log.NewNopLogger(), reg)
	testutil.Ok(t, err)
	o := NewOverrides(DefaultLimits(), m)

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func() { close(started) }) }()
	defer func() { cancel(); testutil.Ok(t, <-done) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("manager stopped before it started: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("manager did not start within 10s")
	}
	testutil.Equals(t, 100.0, o.IngestionRate("team-a"))
	testutil.Equals(t, 10000.0, o.IngestionRate("team-b"))

	write("overrides:\n  team-a:\n    ingestion_rate: 200\n  team-b:\n    max_label_names_per_series: 5\n")
	waitFor(t, func() bool { return o.IngestionRate("team-a") == 200 })
	testutil.Equals(t, 5, o.MaxLabelNamesPerSeries("team-b"))
	testutil.Equals(t, 1024, o.MaxLabelNameLength("team-b"))

	success := func() float64 {
		mfs, err := reg.Gather()
		testutil.Ok(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "strata_runtime_config_last_reload_successful" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("strata_runtime_config_last_reload_successful not exported")
		return -1
	}
	testutil.Equals(t, 1.0, success())

	write("overrides:\n  team-a:\n    ingestion_rate: nope\n")
	waitFor(t, func() bool { return success() == 0 })
	testutil.Equals(t, 200.0, o.IngestionRate("team-a")) // the last good file stays in force
	testutil.Equals(t, 5, o.MaxLabelNamesPerSeries("team-b"))

	write("overrides: {}\n")
	waitFor(t, func() bool { return o.IngestionRate("team-a") == 10000 })
	testutil.Equals(t, 1.0, success())
	testutil.Equals(t, 1, promtestutil.CollectAndCount(reg, "strata_runtime_config_hash"))
}

func TestRuntimeOverridesBadFileAtStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "runtime.yaml")
	testutil.Ok(t, os.WriteFile(file, []byte("overrides:\n  a:\n    nope: 1\n"), 0o600))
	m, err := NewRuntimeOverridesManager(RuntimeConfig{File: file, ReloadPeriod: time.Second}, DefaultLimits(), log.NewNopLogger(), prometheus.NewRegistry())
	testutil.Ok(t, err)
	err = m.Run(context.Background(), func() { t.Error("started with a bad file") })
	testutil.NotOk(t, err)
	testutil.Assert(t, strings.Contains(err.Error(), "field nope not found"), "got %v", err)
}

func TestOverridesHandlers(t *testing.T) {
	ro, err := LoadRuntimeOverrides([]byte("overrides:\n  b:\n    ingestion_rate: 1\n  a:\n    max_label_names_per_series: 3\n"), DefaultLimits())
	testutil.Ok(t, err)
	o := NewOverrides(DefaultLimits(), staticLimits(ro.Overrides))

	rec := httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/runtime_config?mode=diff", nil))
	testutil.Equals(t, "overrides:\n  a:\n    max_label_names_per_series: 3\n  b:\n    ingestion_rate: 1\n", rec.Body.String())

	rec = httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/runtime_config", nil))
	testutil.Assert(t, strings.Contains(rec.Body.String(), "max_label_value_length: 2048"), rec.Body.String())

	rec = httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/user_limits", nil)
	req.Header.Set(HeaderOrgID, "b")
	DefaultConfig().HTTPMiddleware(false)(o.UserLimitsHandler()).ServeHTTP(rec, req)
	testutil.Equals(t, 200, rec.Code)
	var got map[string]any
	testutil.Ok(t, json.Unmarshal(rec.Body.Bytes(), &got))
	testutil.Equals(t, 1.0, got["ingestion_rate"])
	testutil.Equals(t, "10m", got["creation_grace_period"])
}

type staticLimits map[string]*Limits

func (s staticLimits) ByTenant(t string) *Limits       { return s[t] }
func (s staticLimits) AllByTenant() map[string]*Limits { return s }

// waitFor polls cond every 10ms for at most 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
