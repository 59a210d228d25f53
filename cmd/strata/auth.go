package main

import (
	"net/http"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"google.golang.org/grpc"

	"github.com/stratametrics/strata/pkg/tenancy"
)

// registerAuthFlags registers the flags of built-in authentication and TLS (every component).
func registerAuthFlags(app *kingpin.Application, b *binder, cfg *Config) {
	b.String(app.Flag("auth.type", "Built-in authentication: none, basic (bcrypt-hashed users) or bearer (SHA-256-hashed tokens), with the credentials of --auth.credentials-file."), &cfg.Auth.Type)
	b.String(app.Flag("auth.credentials-file", "YAML file of credentials, each with the tenants it may write and read; reloaded periodically."), &cfg.Auth.CredentialsFile)
	b.Duration(app.Flag("auth.credentials-reload-period", "How often the credentials file is read again."), &cfg.Auth.CredentialsReloadPeriod)
	b.String(app.Flag("auth.cluster-secret-file", "File holding the secret components authenticate each other with (gRPC and internal HTTP); needed with auth on."), &cfg.Auth.ClusterSecretFile)
	b.Bool(app.Flag("auth.metrics-require-auth", "With auth on, /metrics also needs an admin credential (read: [\"*\"])."), &cfg.Auth.MetricsRequireAuth)
	b.String(app.Flag("web.config.file", "Prometheus web config file (exporter-toolkit) securing the HTTP server with TLS."), &cfg.Server.TLS.WebConfigFile)
	b.String(app.Flag("server.grpc-tls-config-file", "Web config file (same format; its tls_server_config) securing the gRPC server with TLS; other components are then reached over TLS too."), &cfg.Server.TLS.GRPCTLSConfigFile)
}

// setupAuth builds the authenticator when auth is on (cfg.Auth then checks credentials; its reloads run in the
// group) and the options of connections to other components: TLS, and the cluster secret. It runs before the
// servers are built: they and every component copy cfg.Auth.
func setupAuth(p *process) error {
	cfg := p.cfg
	tlsOpts, err := cfg.Server.TLS.GRPCClientDialOptions()
	if err != nil {
		return errSetup(err, "gRPC client TLS")
	}
	if cfg.Auth.AuthEnabled() {
		a, err := tenancy.NewAuthenticator(cfg.Auth, p.logger, p.reg, time.Now)
		if err != nil {
			return errSetup(err, "authentication")
		}
		cfg.Auth = cfg.Auth.WithAuthenticator(a)
		addContextActor(p.g, a.Run)
		p.secretDialOpts = []grpc.DialOption{cfg.Auth.ClusterSecretDialOption()}
	}
	p.dialOpts = append(tlsOpts, p.secretDialOpts...)
	return nil
}

// admin guards a page that names tenants or acts on the process (see tenancy.Config.AdminMiddleware).
func (p *process) admin(h http.Handler) http.Handler { return p.cfg.Auth.AdminMiddleware()(h) }

// internalClient returns an HTTP client for calls to other components: with the cluster secret, and the
// client TLS of server.grpc_client_tls_config when enabled.
func (p *process) internalClient(timeout time.Duration, t *http.Transport) *http.Client {
	if t == nil {
		t = http.DefaultTransport.(*http.Transport).Clone()
	}
	if tc, err := p.cfg.Server.TLS.ClientTLS(); err == nil && tc != nil { // validated at start
		t.TLSClientConfig = tc
	}
	return &http.Client{Timeout: timeout, Transport: p.cfg.Auth.ClusterSecretTransport(t)}
}
