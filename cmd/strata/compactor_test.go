package main

import (
	"os"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

func TestCompactorFlags(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantErr    bool
		wantRanges []time.Duration
		wantOnce   bool
		wantRaw    time.Duration
	}{
		{name: "defaults", args: []string{"compactor"}, wantRanges: []time.Duration{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}},
		{name: "short ranges, once", args: []string{"compactor", "--compactor.block-ranges=1m,2m,1d", "--once"},
			wantRanges: []time.Duration{time.Minute, 2 * time.Minute, 24 * time.Hour}, wantOnce: true},
		{name: "in all", args: []string{"all", "--compactor.block-ranges=1m,4m"}, wantRanges: []time.Duration{time.Minute, 4 * time.Minute}},
		{name: "ranges must increase", args: []string{"compactor", "--compactor.block-ranges=2h,1h"}, wantErr: true},
		{name: "bad range", args: []string{"compactor", "--compactor.block-ranges=1m,x"}, wantErr: true},
		{name: "retention in days, as Thanos's flags", args: []string{"compactor", "--compactor.retention-resolution-raw=15d"},
			wantRanges: []time.Duration{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}, wantRaw: 15 * 24 * time.Hour},
		{name: "bad retention", args: []string{"compactor", "--compactor.retention-resolution-raw=15x"}, wantErr: true},
		{name: "deletion delay not above the ignore delay", args: []string{"compactor", "--compactor.deletion-delay=30m", "--store-gateway.ignore-deletion-marks-delay=1h"}, wantErr: true},
		{name: "deletion delay above the ignore delay", args: []string{"compactor", "--compactor.deletion-delay=2m", "--store-gateway.ignore-deletion-marks-delay=1m"},
			wantRanges: []time.Duration{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, run, cfg, err := parseArgs(tc.args)
			if tc.wantErr {
				testutil.NotOk(t, err)
				return
			}
			testutil.Ok(t, err)
			testutil.Assert(t, run != nil)
			testutil.Equals(t, tc.wantRanges, cfg.Compactor.BlockRanges)
			testutil.Equals(t, tc.wantOnce, cfg.Compactor.Once)
			testutil.Equals(t, tc.wantRaw, cfg.Compactor.Retention.Raw)
		})
	}
}

func TestCompactorConfigFile(t *testing.T) {
	file := t.TempDir() + "/config.yaml"
	testutil.Ok(t, os.WriteFile(file, []byte(`compactor:
  compaction_interval: 5m
  block_ranges: [1m, 2m]
  deletion_delay: 2h
  retention_resolution_raw: 720h
  normalise_external_labels: false
  work_dir: /somewhere
`), 0o600))
	_, _, cfg, err := parseArgs([]string{"compactor", "--config.file=" + file, "--compactor.deletion-delay=3h"})
	testutil.Ok(t, err)
	c := cfg.Compactor
	testutil.Equals(t, 5*time.Minute, c.CompactionInterval)
	testutil.Equals(t, []time.Duration{time.Minute, 2 * time.Minute}, c.BlockRanges)
	testutil.Equals(t, 3*time.Hour, c.Cleaner.DeletionDelay, "the flag wins")
	testutil.Equals(t, 720*time.Hour, c.Retention.Raw)
	testutil.Equals(t, false, c.Normalise.Enabled)
	testutil.Equals(t, true, c.DownsamplingEnabled, "default kept")
	testutil.Equals(t, "/somewhere", c.WorkDir)
}
