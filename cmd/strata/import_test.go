package main

import (
	"syscall"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
)

func TestParseMatchLabels(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want map[string]string
		err  bool
	}{
		{in: nil, want: map[string]string{}},
		{in: []string{"cluster=eu1", "replica=a"}, want: map[string]string{"cluster": "eu1", "replica": "a"}},
		{in: []string{"env="}, want: map[string]string{"env": ""}},
		{in: []string{"a=b=c"}, want: map[string]string{"a": "b=c"}},
		{in: []string{"cluster"}, err: true},
		{in: []string{"=x"}, err: true},
	} {
		got, err := parseMatchLabels(tc.in)
		if tc.err {
			testutil.NotOk(t, err, "%v", tc.in)
			continue
		}
		testutil.Ok(t, err)
		testutil.Equals(t, tc.want, got)
	}
}

func TestParseArgs_ImportThanos(t *testing.T) {
	cmd, run, _, err := parseArgs([]string{"tools", "import-thanos", "--from.objstore.config-file=src.yml", "--tenant=team-a", "--resolution=5m"})
	testutil.Ok(t, err)
	testutil.Equals(t, "tools import-thanos", cmd)
	testutil.Assert(t, run != nil, "no component for %s", cmd)
	for _, args := range [][]string{
		{"tools", "import-thanos", "--tenant=team-a"},                                                 // no source
		{"tools", "import-thanos", "--from.objstore.config-file=src.yml"},                             // no tenant
		{"tools", "import-thanos", "--from.objstore.config-file=s", "--tenant=t", "--resolution=10m"}, // bad resolution
	} {
		_, _, _, err := parseArgs(args)
		testutil.NotOk(t, err, "%v", args)
	}
}

func TestExitCode(t *testing.T) {
	sig := errors.Wrap(signalError{sig: syscall.SIGINT}, "run group")
	for _, tc := range []struct {
		name    string
		err     error
		oneShot bool
		want    int
	}{
		{name: "server ended", want: 0},
		{name: "server stopped by a signal", err: sig, want: 0},
		{name: "server failed", err: errors.New("boom"), want: 1},
		{name: "tool finished", oneShot: true, want: 0},
		{name: "tool interrupted mid-work", err: sig, oneShot: true, want: 130},
		{name: "tool failed", err: errors.New("boom"), oneShot: true, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, exitCode(tc.err, tc.oneShot))
		})
	}
}
