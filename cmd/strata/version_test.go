package main

import (
	"runtime/debug"
	"testing"

	"github.com/efficientgo/core/testutil"
)

func TestVersionFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want buildVersion
	}{
		{name: "no build info", want: buildVersion{Version: "devel"}},
		{name: "go build without VCS", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, want: buildVersion{Version: "devel"}},
		{name: "go install of a tag", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, want: buildVersion{Version: "v1.2.3"}},
		{name: "go build in a clean checkout",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206184759-13b52a850396"}, Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "13b52a850396e32cce72032050bb024d7315bf29"},
				{Key: "vcs.time", Value: "2026-12-06T18:47:59Z"}, {Key: "vcs.modified", Value: "false"},
			}},
			want: buildVersion{Version: "v0.0.0-20261206184759-13b52a850396", Revision: "13b52a850396e32cce72032050bb024d7315bf29", BuildDate: "2026-12-06T18:47:59Z"}},
		{name: "go build with local changes",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206184759-13b52a850396+dirty"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "13b52a850396"}, {Key: "vcs.modified", Value: "true"},
			}},
			want: buildVersion{Version: "v0.0.0-20261206184759-13b52a850396+dirty", Revision: "13b52a850396-modified"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, versionFromBuildInfo(tc.bi))
		})
	}
}
