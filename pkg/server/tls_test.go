package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
)

// A bad web config fails at start (Validate) with the file named, for HTTP and gRPC alike.
func TestTLSConfigValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		testutil.Ok(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	missingCert := write("missing.yml", "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
	unknownKey := write("unknown.yml", "tls_server_config:\n  certfile: x\n")
	noTLS := write("empty.yml", "http_server_config:\n  http2: true\n")
	for _, tc := range []struct {
		name string
		cfg  TLSConfig
		want string // "" : valid
	}{
		{name: "none", cfg: TLSConfig{}},
		{name: "web config without TLS", cfg: TLSConfig{WebConfigFile: noTLS}},
		{name: "HTTP: missing certificate", cfg: TLSConfig{WebConfigFile: missingCert}, want: "web_config_file"},
		{name: "gRPC: missing certificate", cfg: TLSConfig{GRPCTLSConfigFile: missingCert}, want: "gRPC TLS config file"},
		{name: "gRPC: unknown key", cfg: TLSConfig{GRPCTLSConfigFile: unknownKey}, want: "certfile"},
		{name: "gRPC: no file", cfg: TLSConfig{GRPCTLSConfigFile: filepath.Join(dir, "absent.yml")}, want: "read gRPC TLS config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				testutil.Ok(t, err)
				return
			}
			testutil.NotOk(t, err)
			testutil.Assert(t, strings.Contains(err.Error(), tc.want), "%q does not say %q", err, tc.want)
		})
	}
	testutil.Assert(t, TLSConfig{GRPCTLSConfigFile: "x"}.ClientTLSEnabled(), "gRPC TLS implies TLS to other components")
	testutil.Assert(t, !TLSConfig{}.ClientTLSEnabled(), "no TLS by default")
}
