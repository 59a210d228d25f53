package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

// writeTestCerts writes a self-signed CA (ca.crt) and a server certificate for 127.0.0.1 signed by it
// (server.crt, server.key) into dir, and returns the CA's pool.
func writeTestCerts(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	testutil.Ok(t, err)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strata e2e CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	testutil.Ok(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	testutil.Ok(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	testutil.Ok(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	testutil.Ok(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	testutil.Ok(t, err)

	write := func(name, typ string, b []byte) {
		testutil.Ok(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600))
	}
	write("ca.crt", "CERTIFICATE", caDER)
	write("server.crt", "CERTIFICATE", der)
	write("server.key", "EC PRIVATE KEY", keyDER)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

// TestAuthPrometheusRemoteWriteTLS: a real Prometheus remote-writes to `strata all` over TLS (Prometheus's web
// config on HTTP and gRPC, the process's own gRPC calls over TLS too) with its remote_write basic_auth and
// tls_config: no sample fails, and they are queryable with the same credential.
func TestAuthPrometheusRemoteWriteTLS(t *testing.T) {
	dir := t.TempDir()
	pool := writeTestCerts(t, dir)
	creds := filepath.Join(dir, "credentials.yaml")
	testutil.Ok(t, os.WriteFile(creds, []byte(basicCredentialsYAML(t)), 0o600))
	testutil.Ok(t, os.WriteFile(filepath.Join(dir, "web.yml"), []byte("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"), 0o600))
	cfg := fmt.Sprintf(`server:
  web_config_file: %[1]s/web.yml
  grpc_tls_config_file: %[1]s/web.yml
  grpc_client_tls_config:
    ca_file: %[1]s/ca.crt
auth:
  type: basic
  credentials_file: %[2]s
  cluster_secret: %[3]s
`, dir, creds, e2eClusterSecret)
	testutil.Ok(t, os.WriteFile(filepath.Join(dir, "strata.yml"), []byte(cfg), 0o600))
	s := startStrata(t, dir, "all", "--config.file="+filepath.Join(dir, "strata.yml"))

	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	httpsURL := func(path string) string { return "https://" + s.httpAddr + path }
	waitUntil(t, 45*time.Second, "strata ready over HTTPS", func() bool {
		resp, err := client.Get(httpsURL("/ready"))
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	})
	// Plain HTTP and plaintext gRPC are refused; gRPC over TLS with the cluster secret is served.
	code, _ := httpGet(s.url("/ready"), nil)
	testutil.Equals(t, 400, code) // Go's answer to HTTP on a TLS port
	testutil.Equals(t, codes.Unavailable, authGRPC(t, s.grpcAddr, "Series", "secret", "team-a"))
	tlsCreds := grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	testutil.Equals(t, codes.OK, authGRPC(t, s.grpcAddr, "Series", "secret", "team-a", tlsCreds))
	testutil.Equals(t, codes.Unauthenticated, authGRPC(t, s.grpcAddr, "Series", "", "team-a", tlsCreds))

	target := startMetricsTarget(t)
	promAddr := freeAddr(t)
	promCfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: e2e
    static_configs:
      - targets: [%q]
remote_write:
  - url: %s
    basic_auth:
      username: prom-a
      password: %s
    tls_config:
      ca_file: %s
    queue_config:
      batch_send_deadline: 1s
      max_shards: 2
`, target, httpsURL("/api/v1/push"), authUsers["prom-a"], filepath.Join(dir, "ca.crt"))
	testutil.Ok(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promCfg), 0o600))
	startProc(t, dir, "prometheus", promTool(t, "prometheus"), "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "prom-data"), "--web.listen-address="+promAddr)

	promMetric := func(name string) float64 {
		_, body := httpGet("http://"+promAddr+"/metrics", nil)
		sum, found := 0.0, false
		for _, l := range strings.Split(body, "\n") {
			if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
				continue
			}
			f, err := strconv.ParseFloat(l[strings.LastIndex(l, " ")+1:], 64)
			testutil.Ok(t, err)
			sum, found = sum+f, true
		}
		if !found {
			return -1
		}
		return sum
	}
	waitUntil(t, 45*time.Second, "samples of Prometheus queryable in team-a", func() bool {
		code, body := authHTTP(t, client, "GET", httpsURL("/prometheus/api/v1/query?query=count(e2e_requests_total)"), "prom-a", "")
		return code == 200 && strings.Contains(body, `"value":[`) && promMetric("prometheus_remote_storage_samples_total") >= 20
	})
	testutil.Equals(t, 0.0, promMetric("prometheus_remote_storage_samples_failed_total"))
	sent := promMetric("prometheus_remote_storage_samples_total")
	t.Logf("Prometheus sent %v samples over TLS with basic auth, 0 failed", sent)
	// Another tenant's credential does not see them.
	code, body := authHTTP(t, client, "GET", httpsURL("/prometheus/api/v1/query?query=count(e2e_requests_total)"), "admin", "team-b")
	testutil.Equals(t, 200, code)
	testutil.Assert(t, strings.Contains(body, `"result":[]`), "team-b sees team-a's samples: %s", body)
}
