package e2e

import (
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// TestVersionOfPlainGoBuild: the binary TestMain builds with a plain `go build` (no -ldflags) reports a version.
func TestVersionOfPlainGoBuild(t *testing.T) {
	out, err := exec.Command(strataBin, "--version").CombinedOutput()
	testutil.Ok(t, err, string(out))
	testutil.Assert(t, regexp.MustCompile(`^strata, version \S+ `).Match(out), "no version in:\n%s", out)
}

// httpPostForm posts a form with a tenant and returns the status and (the start of) the body; 0 when the request
// failed, as when the process died.
func httpPostForm(u string, tenant string, form url.Values, timeout time.Duration) (int, string) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Scope-OrgID", tenant)
	c := http.Client{Timeout: timeout}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// TestHostileQueriesDoNotKillAll: a query nested 100,000 deep (which overflowed the stack and killed every
// component of `strata all`) and a sum of 500,000 terms (which kept a core busy for minutes after the client
// left) are each refused with a 400 naming the limit, and the process still answers a normal query.
func TestHostileQueriesDoNotKillAll(t *testing.T) {
	p := startStrata(t, t.TempDir(), "all")
	p.waitReady(t, 30*time.Second)

	for _, tc := range []struct {
		name, query, want string
	}{
		{name: "abs nested 100,000 deep", query: strings.Repeat("abs(", 100_000) + "vector(1)" + strings.Repeat(")", 100_000), want: "max_expression_depth"},
		{name: "1+1+… with 500,000 terms", query: "1" + strings.Repeat("+1", 500_000), want: "max_expression_tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := httpPostForm(p.url("/prometheus/api/v1/query"), "team-a", url.Values{"query": {tc.query}}, time.Minute)
			testutil.Equals(t, http.StatusBadRequest, code, body)
			mustContain(t, body, `"errorType":"bad_data"`, tc.want)
		})
	}

	select {
	case <-p.exited:
		t.Fatalf("strata exited: %v", p.err)
	default:
	}
	code, body := httpPostForm(p.url("/prometheus/api/v1/query"), "team-a", url.Values{"query": {"vector(1)+1"}, "time": {"100"}}, 10*time.Second)
	testutil.Equals(t, http.StatusOK, code, body)
	mustContain(t, body, `"value":[100,"2"]`)
	testutil.Equals(t, 0, p.stop(t))
}
