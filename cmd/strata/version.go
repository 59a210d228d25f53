package main

import (
	"runtime/debug"

	"github.com/prometheus/common/version"
)

// buildVersion is what --version, /api/v1/status/buildinfo and the strata_build_info metric report.
type buildVersion struct {
	Version, Revision, BuildDate string
}

// versionFromBuildInfo reads the version the Go toolchain embeds in every binary: the main module's version (a
// tag, or a pseudo-version from the VCS commit since Go 1.24; "(devel)" without VCS), the commit, whether the
// tree had local changes, and the commit's time.
func versionFromBuildInfo(bi *debug.BuildInfo) buildVersion {
	v := buildVersion{Version: "devel"}
	if bi == nil {
		return v
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		case "vcs.time":
			v.BuildDate = s.Value
		}
	}
	if modified && v.Revision != "" {
		v.Revision += "-modified"
	}
	return v
}

// fillVersion sets the fields of prometheus/common/version that the build's -ldflags (make build) left empty,
// from the binary's build info, so that a plain `go build` or `go install` reports a version too.
func fillVersion() {
	bi, _ := debug.ReadBuildInfo()
	v := versionFromBuildInfo(bi)
	if version.Version == "" {
		version.Version = v.Version
	}
	if version.Revision == "" {
		version.Revision = v.Revision
	}
	if version.BuildDate == "" {
		version.BuildDate = v.BuildDate
	}
}
