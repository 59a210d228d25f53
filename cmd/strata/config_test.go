package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
)

func TestParseArgsPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "strata.yaml")
	testutil.Ok(t, os.WriteFile(file, []byte(`
server:
  http_address: 127.0.0.1:1111
  grpc_address: 127.0.0.1:2222
  grpc_server_max_send_msg_size: 2097152
data_dir: /from/file
auth:
  multitenancy_enabled: false
limits:
  ingestion_rate: 42
  out_of_order_time_window: 30m
runtime_config:
  reload_period: 1m
`), 0o600))

	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, cfg *Config)
	}{
		{name: "defaults", args: nil, check: func(t *testing.T, cfg *Config) {
			testutil.Equals(t, "0.0.0.0:8080", cfg.Server.HTTPAddress)
			testutil.Equals(t, "0.0.0.0:9095", cfg.Server.GRPCAddress)
			testutil.Equals(t, "./data", cfg.DataDir)
			testutil.Equals(t, true, cfg.Auth.MultitenancyEnabled)
			testutil.Equals(t, 10000.0, cfg.Limits.IngestionRate)
			testutil.Equals(t, 10*time.Second, cfg.RuntimeConfig.ReloadPeriod)
			testutil.Equals(t, 104857600, cfg.Server.GRPCServerMaxRecvMsgSize) // Mimir's 100 MiB
			testutil.Equals(t, 104857600, cfg.Server.GRPCServerMaxSendMsgSize)
		}},
		{name: "file over defaults", args: []string{"--config.file=" + file}, check: func(t *testing.T, cfg *Config) {
			testutil.Equals(t, "127.0.0.1:1111", cfg.Server.HTTPAddress)
			testutil.Equals(t, "/from/file", cfg.DataDir)
			testutil.Equals(t, false, cfg.Auth.MultitenancyEnabled)
			testutil.Equals(t, 42.0, cfg.Limits.IngestionRate)
			testutil.Equals(t, 200000, cfg.Limits.IngestionBurstSize) // untouched keys keep their defaults
			testutil.Equals(t, time.Minute, cfg.RuntimeConfig.ReloadPeriod)
			testutil.Equals(t, 10*time.Second, cfg.Server.GracefulShutdownTimeout)
			testutil.Equals(t, 2097152, cfg.Server.GRPCServerMaxSendMsgSize)
			testutil.Equals(t, 104857600, cfg.Server.GRPCServerMaxRecvMsgSize)
		}},
		{name: "flags over file", args: []string{"all", "--config.file=" + file, "--http-address=127.0.0.1:3333", "--data-dir=/from/flag", "--auth.multitenancy-enabled", "--runtime-config.reload-period=5s", "--server.grpc-max-recv-msg-size-bytes=1048576"},
			check: func(t *testing.T, cfg *Config) {
				testutil.Equals(t, "127.0.0.1:3333", cfg.Server.HTTPAddress)
				testutil.Equals(t, "127.0.0.1:2222", cfg.Server.GRPCAddress) // not set by flag: the file's
				testutil.Equals(t, "/from/flag", cfg.DataDir)
				testutil.Equals(t, true, cfg.Auth.MultitenancyEnabled)
				testutil.Equals(t, 5*time.Second, cfg.RuntimeConfig.ReloadPeriod)
				testutil.Equals(t, 42.0, cfg.Limits.IngestionRate)
				testutil.Equals(t, 1048576, cfg.Server.GRPCServerMaxRecvMsgSize)
				testutil.Equals(t, 2097152, cfg.Server.GRPCServerMaxSendMsgSize) // not set by flag: the file's
			}},
		{name: "flag equal to the default still overrides the file", args: []string{"--config.file=" + file, "--data-dir=./data", "--http-address=0.0.0.0:8080"},
			check: func(t *testing.T, cfg *Config) {
				testutil.Equals(t, "./data", cfg.DataDir)
				testutil.Equals(t, "0.0.0.0:8080", cfg.Server.HTTPAddress)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, run, cfg, err := parseArgs(tc.args)
			testutil.Ok(t, err)
			testutil.Equals(t, "all", cmd)
			testutil.Assert(t, run != nil)
			tc.check(t, cfg)
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		testutil.Ok(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown flag", args: []string{"--nope"}, want: "unknown long flag '--nope'"},
		{name: "unknown command", args: []string{"nope"}, want: "unexpected nope"},
		{name: "missing config file", args: []string{"--config.file=" + filepath.Join(dir, "missing.yaml")}, want: "read config file"},
		{name: "unknown key in file", args: []string{"--config.file=" + write("unknown.yaml", "limitz: {}\n")}, want: "field limitz not found"},
		{name: "bad limit in file", args: []string{"--config.file=" + write("neg.yaml", "limits:\n  ingestion_rate: -1\n")}, want: "ingestion_rate must not be negative"},
		{name: "negative validated series cache", args: []string{"distributor", "--distributor.validated-series-cache-size=-1"}, want: "validated_series_cache_size must be 0 (none) or positive"},
		{name: "bad log level", args: []string{"--log.level=loud"}, want: "log level must be one of"},
		{name: "bad duration flag", args: []string{"--runtime-config.reload-period=soon"}, want: `invalid value "soon" for flag --runtime-config.reload-period`},
		{name: "both objstore configs", args: []string{"--objstore.config-file=x.yaml", "--config.file=" + write("obj.yaml", "objstore:\n  type: FILESYSTEM\n")}, want: "either config_file or an inline type/config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := parseArgs(tc.args)
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.want), "error %q does not contain %q", err, tc.want)
		})
	}
}

// TestApplyRuntimeGOGC: runtime.gogc sets the collector's percentage, unless GOGC is in the environment; 0 is
// the component's default (20 where TSDB heads live, 75 elsewhere); a negative one is refused.
func TestApplyRuntimeGOGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	for _, tc := range []struct {
		gogc      int
		component string
		env       string
		want      int
	}{
		{gogc: 75, component: "ingester", want: 75},
		{gogc: 75, component: "ingester", env: "200", want: 100},
		{component: "ingester", want: 20},
		{component: "all", want: 20},
		{component: "querier", want: 75},
		{component: "distributor", want: 75},
		{component: "querier", env: "200", want: 100},
	} {
		debug.SetGCPercent(100)
		applyRuntime(runtimeConfig{GOGC: tc.gogc}, tc.component, tc.env, log.NewNopLogger())
		testutil.Equals(t, tc.want, debug.SetGCPercent(100), "gogc %d, %s, GOGC env %q", tc.gogc, tc.component, tc.env)
	}
	testutil.Equals(t, 0, defaultConfig().Runtime.GOGC)
	testutil.Ok(t, runtimeConfig{GOGC: 0}.Validate())
	testutil.NotOk(t, runtimeConfig{GOGC: -1}.Validate())
}
