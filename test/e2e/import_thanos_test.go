package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
)

// fsBucketConfig writes a Thanos objstore config file for a filesystem bucket at dir and returns its path.
func fsBucketConfig(t *testing.T, dir string) string {
	t.Helper()
	testutil.Ok(t, os.MkdirAll(dir, 0o750))
	p := filepath.Join(t.TempDir(), "objstore.yml")
	testutil.Ok(t, os.WriteFile(p, []byte(fmt.Sprintf("type: FILESYSTEM\nconfig:\n  directory: %s\n", dir)), 0o600))
	return p
}

// TestImportThanos runs `strata tools import-thanos` from a Thanos-layout bucket (promtool blocks at its root, one
// of them partial) into tenant team-a of a filesystem bucket, then `strata all` over that bucket answers as
// Prometheus does over the same blocks.
func TestImportThanos(t *testing.T) {
	end := time.Now().Add(-8 * 24 * time.Hour).Truncate(time.Hour)
	start := end.Add(-6 * time.Hour)
	dirs := promtoolBlocks(t, start, end, time.Minute, 20)
	testutil.Assert(t, len(dirs) >= 3, "want several blocks, got %d", len(dirs))

	// The Thanos bucket: every block at its root with external labels; the last one partial (no meta.json).
	srcDir, dstDir := filepath.Join(t.TempDir(), "thanos"), filepath.Join(t.TempDir(), "strata")
	srcConf, dstConf := fsBucketConfig(t, srcDir), fsBucketConfig(t, dstDir)
	src, err := filesystem.NewBucket(srcDir)
	testutil.Ok(t, err)
	ext := map[string]string{"cluster": "old"}
	var ids []string
	for _, dir := range dirs {
		meta, err := block.ReadMetaFromDir(dir)
		testutil.Ok(t, err)
		meta.Thanos.Labels, meta.Thanos.Source = map[string]string{"cluster": "old"}, block.SidecarSource
		testutil.Ok(t, block.Upload(context.Background(), log.NewNopLogger(), src, dir, meta))
		ids = append(ids, meta.ULID.String())
	}
	partial := ids[len(ids)-1]
	testutil.Ok(t, src.Delete(context.Background(), path.Join(partial, block.MetaFilename)))
	ids, dirs = ids[:len(ids)-1], dirs[:len(dirs)-1]

	importCmd := func(extra ...string) string {
		args := append([]string{"tools", "import-thanos", "--from.objstore.config-file=" + srcConf, "--objstore.config-file=" + dstConf,
			"--tenant=team-a", "--data-dir=" + filepath.Join(t.TempDir(), "data")}, extra...)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, strataBin, args...).CombinedOutput()
		testutil.Ok(t, err, "strata %s: %s", strings.Join(args, " "), out)
		return string(out)
	}
	out := importCmd("--dry-run")
	testutil.Assert(t, strings.Contains(out, fmt.Sprintf("plan: %d blocks to copy", len(ids))) && strings.Contains(out, "1 partial"), "dry run output: %s", out)
	entries, err := os.ReadDir(dstDir)
	testutil.Ok(t, err)
	testutil.Equals(t, 0, len(entries), "the dry run copied something")

	out = importCmd("--concurrency=2")
	testutil.Assert(t, strings.Contains(out, "import done"), "import output: %s", out)
	out = importCmd()
	testutil.Assert(t, strings.Contains(out, fmt.Sprintf("plan: 0 blocks to copy (0 bytes), %d present", len(ids))), "re-run output: %s", out)

	s := startStrata(t, t.TempDir(), append([]string{"all", "--objstore.config-file=" + dstConf}, sgFlags...)...)
	s.waitReady(t, 30*time.Second)
	waitBlocks(t, s.url(""), "team-a", ids, syncWait)
	base := s.url("/prometheus")
	for _, q := range []string{`app_requests_total`, `sum by (job) (rate(app_requests_total[10m]))`, `max_over_time(app_temperature_celsius{cluster="old"}[1h])`} {
		got, _ := promQuery(t, base, "team-a", q, start, end, 10*time.Minute, nil)
		want := refQueryExt(t, dirs, ext, q, start, end, 10*time.Minute)
		testutil.Assert(t, len(want) > 0, "%s: empty reference", q)
		testutil.Equals(t, want, got, "%s", q)
	}
}
