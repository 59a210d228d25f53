package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
)

// shellBlocks returns the ```sh blocks of a Markdown file, in order.
func shellBlocks(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	testutil.Ok(t, err)
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	testutil.Ok(t, sc.Err())
	testutil.Assert(t, cur == nil, "unterminated code block in %s", path)
	return blocks
}

// TestTutorials runs every tutorial's shell blocks as written, in one bash, from the repository root, with
// GOBIN pointed at a temp dir on PATH, and Prometheus's prometheus and promtool (built as in the other tests) on
// PATH too. They use fixed ports (Strata's defaults 8080 and 9095; Prometheus's 9090; a sidecar's 10901 and
// 10902), so those must be free.
func TestTutorials(t *testing.T) {
	for _, port := range []string{"8080", "9095", "9090", "10901", "10902"} {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("the tutorials use port %s, which is in use here: %v", port, err)
		}
		_ = l.Close()
	}
	files, err := filepath.Glob(filepath.Join(repoRoot(), "tutorials", "*.md"))
	testutil.Ok(t, err)
	testutil.Assert(t, len(files) > 0, "no tutorials found")
	promDir := filepath.Dir(promTool(t, "prometheus"))

	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			blocks := shellBlocks(t, file)
			testutil.Assert(t, len(blocks) > 0, "no sh blocks in %s", file)
			gobin := t.TempDir()
			// Whatever the tutorial leaves running is killed when the script ends (the EXIT trap) or times out.
			script := "set -euo pipefail\ntrap 'jobs -p | xargs -r kill -9' EXIT\n" + strings.Join(blocks, "\n")

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-c", script)
			cmd.Dir = repoRoot()
			cmd.Env = append(os.Environ(), "GOBIN="+gobin, "PATH="+strings.Join([]string{gobin, promDir, os.Getenv("PATH")}, string(os.PathListSeparator)))
			cmd.WaitDelay = 10 * time.Second
			out, err := cmd.CombinedOutput()
			testutil.Ok(t, err, "tutorial %s failed:\n%s", filepath.Base(file), out)
			t.Logf("output:\n%s", out)
		})
	}
}
