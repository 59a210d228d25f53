package main

import (
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
	}{
		{name: "defaults", args: []string{"compactor"}, wantRanges: []time.Duration{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}},
		{name: "short ranges, once", args: []string{"compactor", "--compactor.block-ranges=1m,2m,1d", "--once"},
			wantRanges: []time.Duration{time.Minute, 2 * time.Minute, 24 * time.Hour}, wantOnce: true},
		{name: "in all", args: []string{"all", "--compactor.block-ranges=1m,4m"}, wantRanges: []time.Duration{time.Minute, 4 * time.Minute}},
		{name: "ranges must increase", args: []string{"compactor", "--compactor.block-ranges=2h,1h"}, wantErr: true},
		{name: "bad range", args: []string{"compactor", "--compactor.block-ranges=1m,x"}, wantErr: true},
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
		})
	}
}
