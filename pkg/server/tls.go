package server

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"

	"github.com/efficientgo/core/errors"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLSConfig is the TLS of a process's servers and of its connections to other components. The server side
// uses Prometheus's web config file (exporter-toolkit: tls_server_config with cert_file, key_file,
// client_ca_file, client_auth_type, min_version…), read again on every new connection so that renewed
// certificates are picked up without a restart.
type TLSConfig struct {
	// WebConfigFile secures the HTTP server, as Prometheus's --web.config.file (its basic_auth_users and
	// http_server_config apply too).
	WebConfigFile string `yaml:"web_config_file"`
	// GRPCTLSConfigFile secures the gRPC server: a file of the same format, of which tls_server_config is used
	// (often the same file).
	GRPCTLSConfigFile string `yaml:"grpc_tls_config_file"`
	// GRPCClientTLSEnabled makes this process's gRPC connections to other components use TLS with
	// GRPCClientTLS. It is implied by GRPCTLSConfigFile: a cluster whose servers use TLS.
	GRPCClientTLSEnabled bool `yaml:"grpc_client_tls_enabled"`
	// GRPCClientTLS is Prometheus's tls_config (ca_file, cert_file, key_file, server_name, insecure_skip_verify).
	GRPCClientTLS promconfig.TLSConfig `yaml:"grpc_client_tls_config"`
}

// Validate reads the web config files and their certificates, so a bad one fails at start.
func (c TLSConfig) Validate() error {
	if err := web.Validate(c.WebConfigFile); err != nil {
		return errors.Wrapf(err, "server.web_config_file %s", c.WebConfigFile)
	}
	if c.GRPCTLSConfigFile != "" {
		if _, err := loadServerTLS(c.GRPCTLSConfigFile); err != nil {
			return err
		}
	}
	if c.ClientTLSEnabled() {
		if _, err := promconfig.NewTLSConfig(&c.GRPCClientTLS); err != nil {
			return errors.Wrap(err, "server.grpc_client_tls_config")
		}
	}
	return nil
}

// ClientTLSEnabled reports whether connections to other components use TLS.
func (c TLSConfig) ClientTLSEnabled() bool {
	return c.GRPCClientTLSEnabled || c.GRPCTLSConfigFile != ""
}

// loadServerTLS reads the tls_server_config of a web config file into a server *tls.Config for gRPC (HTTP/2).
func loadServerTLS(path string) (*tls.Config, error) {
	data, err := os.ReadFile(path) //nolint:gosec // the operator's configured path
	if err != nil {
		return nil, errors.Wrapf(err, "read gRPC TLS config file %s", path)
	}
	// exporter-toolkit's defaults (its own loader is not exported).
	c := web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, PreferServerCipherSuites: true},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, errors.Wrapf(err, "parse gRPC TLS config file %s", path)
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	tc, err := web.ConfigToTLSConfig(&c.TLSConfig)
	if err != nil {
		return nil, errors.Wrapf(err, "gRPC TLS config file %s", path)
	}
	tc.NextProtos = []string{"h2"}
	return tc, nil
}

// grpcServerOptions returns the TLS credentials of the gRPC server (none without a gRPC TLS config file). The
// file is read again at each new connection; a connection while it is bad fails its handshake.
func (c TLSConfig) grpcServerOptions() ([]grpc.ServerOption, error) {
	if c.GRPCTLSConfigFile == "" {
		return nil, nil
	}
	if _, err := loadServerTLS(c.GRPCTLSConfigFile); err != nil {
		return nil, err
	}
	path := c.GRPCTLSConfigFile
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return loadServerTLS(path)
		},
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tc))}, nil
}

// ClientTLS returns the *tls.Config of connections to other components, or nil when they do not use TLS.
func (c TLSConfig) ClientTLS() (*tls.Config, error) {
	if !c.ClientTLSEnabled() {
		return nil, nil
	}
	tc, err := promconfig.NewTLSConfig(&c.GRPCClientTLS)
	if err != nil {
		return nil, errors.Wrap(err, "server.grpc_client_tls_config")
	}
	return tc, nil
}

// GRPCClientDialOptions are the dial options of connections to other components: TLS when enabled.
func (c TLSConfig) GRPCClientDialOptions() ([]grpc.DialOption, error) {
	tc, err := c.ClientTLS()
	if err != nil || tc == nil {
		return nil, err
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, nil
}
