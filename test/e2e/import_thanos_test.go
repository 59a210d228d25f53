package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/compact"
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

// TestImportThanos_S3KilledAndResumed is the import of the Must show, through the binary and objstore's
// real S3 provider against an S3-compatible server (test/e2e/s3server) on 127.0.0.1:
//
// The Thanos bucket (S3 bucket "thanos", blocks at its root) holds raw blocks of two HA replicas (external labels
// {cluster=eu1, replica=a|b}, the same samples) for the last 8h of a 12h range; for its first 4h only 5m and 1h
// downsampled blocks (Thanos's format, pkg/compact's downsampler) of replica a, as after Thanos's raw retention;
// a block marked for deletion (cluster=deleted) and a partial block (cluster=partial, no meta.json).
//
// The import into tenant team-a of S3 bucket "strata" runs with --concurrency=1 and slow object reads from the
// source (s3server -get-delay, 150ms per object GET), and is SIGKILLed after its first "imported block" line, as
// soon as a block has its chunks but neither its index nor its meta.json (a slow read still ahead). Then no
// meta.json is there whose files are not all there (size and SHA-256 as it lists), and the store-gateway of a
// `strata all` over the destination serves exactly the blocks with a meta.json. A re-run copies the rest; then
// the tenant holds every selected source block exactly once, each file byte-identical (SHA-256) to the source's,
// and nothing else.
//
// "Answers over the source blocks": the same blocks were first written into a filesystem bucket at
// <parent>/thanos/ (the S3 source is a copy of it, object for object), so a second `strata all` over <parent>
// reads the Thanos bucket as if it were tenant "thanos". Its store-gateway sets tenant_id itself (Thanos blocks
// have none; the querier drops it from answers), and with --store-gateway.ignore-deletion-marks-delay=0 it skips
// the deletion-marked block as the import does; the partial one is no block to it either. Both queriers run with
// --query.replica-label=replica; every query is compared raw and with max_source_resolution=5m and 1h, with
// dedup=true, and raw without dedup (both replicas present). Same querier code on both sides: this proves the
// import kept every block, label and resolution that a reader sees, not that downsampled reads are right (that
// is the downsampling tests' job).
func TestImportThanos_S3KilledAndResumed(t *testing.T) {
	ctx := context.Background()
	end := time.Now().Add(-8 * 24 * time.Hour).Truncate(2 * time.Hour)
	start := end.Add(-12 * time.Hour)
	dirs := promtoolBlocks(t, start, end, time.Minute, 12)
	testutil.Equals(t, 6, len(dirs), "promtool blocks of 2h over 12h")

	parent := t.TempDir()
	srcFS, err := filesystem.NewBucket(filepath.Join(parent, "thanos"))
	testutil.Ok(t, err)
	work := t.TempDir()
	var want []string // ULIDs the import must copy
	upload := func(dir string, m *block.Meta, lbls map[string]string) {
		m.Thanos.Labels, m.Thanos.Source = lbls, block.SidecarSource
		if m.Thanos.Downsample.Resolution > 0 {
			m.Thanos.Source = block.CompactorSource
		}
		testutil.Ok(t, block.Upload(ctx, log.NewNopLogger(), srcFS, dir, m))
	}
	replica := func(r string) map[string]string { return map[string]string{"cluster": "eu1", "replica": r} }
	for i, dir := range dirs {
		if i < 2 {
			// Downsampled only: 5m from the raw block, 1h from the 5m one.
			id5m, err := compact.DownsampleDir(log.NewNopLogger(), dir, work, compact.Resolution5m)
			testutil.Ok(t, err)
			dir5m := filepath.Join(work, id5m.String())
			id1h, err := compact.DownsampleDir(log.NewNopLogger(), dir5m, work, compact.Resolution1h)
			testutil.Ok(t, err)
			for _, d := range []string{dir5m, filepath.Join(work, id1h.String())} {
				m, err := block.ReadMetaFromDir(d)
				testutil.Ok(t, err)
				upload(d, m, replica("a"))
				want = append(want, m.ULID.String())
			}
			continue
		}
		for _, r := range []string{"a", "b"} {
			d, m := copyBlockDir(t, dir, work)
			upload(d, m, replica(r))
			want = append(want, m.ULID.String())
		}
	}
	dDir, dMeta := copyBlockDir(t, dirs[3], work)
	upload(dDir, dMeta, map[string]string{"cluster": "deleted", "replica": "a"})
	testutil.Ok(t, block.MarkForDeletion(ctx, log.NewNopLogger(), srcFS, dMeta.ULID, "test", nil))
	pDir, pMeta := copyBlockDir(t, dirs[4], work)
	upload(pDir, pMeta, map[string]string{"cluster": "partial", "replica": "a"})
	testutil.Ok(t, srcFS.Delete(ctx, path.Join(pMeta.ULID.String(), block.MetaFilename)))
	testutil.Equals(t, 12, len(want))

	// S3: the source is a copy of the filesystem bucket; its object reads are slowed so the kill lands mid-copy.
	s3 := startS3Server(t, []string{"thanos", "strata"}, "-slow-bucket=thanos", "-get-delay=150ms")
	srcConf, dstConf := s3BucketConfig(t, s3, "thanos"), s3BucketConfig(t, s3, "strata")
	src, dst := openBucket(t, srcConf), openBucket(t, dstConf)
	mirrorBucket(t, srcFS, src)

	args := []string{"tools", "import-thanos", "--from.objstore.config-file=" + srcConf, "--objstore.config-file=" + dstConf,
		"--tenant=team-a", "--concurrency=1", "--progress-interval=0"}
	imp := startProc(t, t.TempDir(), "import-thanos", strataBin, append(args, "--data-dir="+filepath.Join(t.TempDir(), "data"))...)
	waitOutput(t, imp, `msg="imported block"`, 40*time.Second)
	// Kill while a block is half there: its chunks copied, not its index (a slow read away) nor its meta.json.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if blocks, _ := tenantBlocks(t, dst, "team-a"); slices.ContainsFunc(slices.Collect(maps.Values(blocks)), func(files []string) bool {
			return len(files) > 0 && !slices.Contains(files, block.IndexFilename) && !slices.Contains(files, block.MetaFilename)
		}) {
			break
		}
		testutil.Assert(t, time.Now().Before(deadline), "no half-copied block within 20s:\n%s", imp.out.String())
		select {
		case <-imp.exited:
			t.Fatalf("the import ended before it could be killed mid-copy:\n%s", imp.out.String())
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	testutil.Ok(t, imp.cmd.Process.Signal(syscall.SIGKILL))
	<-imp.exited
	complete, partial := checkNoHalfBlock(t, dst, "team-a")
	t.Logf("killed with %d complete blocks and %d half-copied of %d", len(complete), len(partial), len(want))
	testutil.Assert(t, len(complete) >= 1 && len(partial) >= 1 && len(complete) < len(want), "complete %v, partial %v", complete, partial)

	common := append([]string{"--query.replica-label=replica", "--store-gateway.ignore-deletion-marks-delay=0"}, sgFlags...)
	s := startStrata(t, t.TempDir(), append([]string{"all", "--objstore.config-file=" + dstConf}, common...)...)
	ref := startStrata(t, t.TempDir(), append([]string{"all", "--objstore.config-file=" + fsBucketConfig(t, parent)}, common...)...)
	s.waitReady(t, 30*time.Second)
	var completeS []string
	for _, id := range complete {
		completeS = append(completeS, id.String())
	}
	waitBlocks(t, s.url(""), "team-a", completeS, syncWait) // the half-copied block is not served

	// Re-run to the end.
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(rctx, strataBin, append(args, "--data-dir="+filepath.Join(t.TempDir(), "data"))...).CombinedOutput()
	testutil.Ok(t, err, "re-run: %s", out)
	testutil.Assert(t, strings.Contains(string(out), fmt.Sprintf("plan: %d blocks to copy", len(want)-len(complete))) &&
		strings.Contains(string(out), fmt.Sprintf(", %d present,", len(complete))) && strings.Contains(string(out), "1 partial, 1 marked for deletion"), "re-run: %s", out)

	// Every selected block exactly once, byte-identical to the source, with nothing else.
	blocks, others := tenantBlocks(t, dst, "team-a")
	testutil.Equals(t, 0, len(others), "non-block objects: %v", others)
	var got []string
	for id := range blocks {
		got = append(got, id.String())
	}
	testutil.Equals(t, sortedCopy(want), sortedCopy(got))
	for _, id := range want {
		srcSums := objectSums(t, srcFS, id+"/")
		dstSums := objectSums(t, dst, "team-a/"+id+"/")
		testutil.Assert(t, dstSums[block.MetaFilename] != "", "block %s has no meta.json", id)
		delete(srcSums, block.MetaFilename)
		delete(dstSums, block.MetaFilename)
		testutil.Equals(t, srcSums, dstSums, "block %s: files and their SHA-256", id)
	}
	if c, p := checkNoHalfBlock(t, dst, "team-a"); len(p) > 0 || len(c) != len(want) {
		t.Fatalf("after the re-run: complete %v, half-copied %v", c, p)
	}

	// Answers after the import equal the answers over the source blocks.
	ref.waitReady(t, 30*time.Second)
	waitBlocks(t, s.url(""), "team-a", want, syncWait)
	waitBlocks(t, ref.url(""), "thanos", want, syncWait)
	type q struct {
		query string
		step  time.Duration
		res   string // max_source_resolution; "" raw
		dedup bool
	}
	var qs []q
	for _, res := range []struct {
		res  string
		step time.Duration
	}{{"", 10 * time.Minute}, {"5m", 30 * time.Minute}, {"1h", time.Hour}} {
		for _, query := range []string{
			sgCounter,
			`sum by (job) (rate(` + sgCounter + `[2h]))`,
			`increase(` + sgCounter + `{instance="host-001"}[2h])`,
			`max_over_time(` + sgGauge + `[2h])`,
			`avg_over_time(` + sgGauge + `[2h])`,
			`count by (cluster) (count_over_time(` + sgGauge + `[2h]))`,
		} {
			qs = append(qs, q{query: query, step: res.step, res: res.res, dedup: true})
		}
	}
	qs = append(qs, q{query: `count by (cluster, replica) (` + sgGauge + `)`, step: 10 * time.Minute})
	for i, q := range qs {
		extra := url.Values{"dedup": {strconv.FormatBool(q.dedup)}}
		if q.res != "" {
			extra.Set("max_source_resolution", q.res)
		}
		want, _ := promQuery(t, ref.url("/prometheus"), "thanos", q.query, start, end, q.step, extra)
		testutil.Assert(t, len(want) > 0, "%+v: empty answer over the source", q)
		var got []promSample
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			got, _ = promQuery(t, s.url("/prometheus"), "team-a", q.query, start, end, q.step, extra)
			// The querier re-reads the block list every second: only the first query may wait for it.
			if i > 0 || fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
				break
			}
		}
		testutil.Equals(t, want, got, "%+v", q)
		if !q.dedup {
			replicas := map[string]bool{}
			for _, s := range got {
				replicas[s.Metric["replica"]] = true
			}
			testutil.Equals(t, map[string]bool{"a": true, "b": true}, replicas, "replicas without dedup")
		}
	}
	// The first 4h are held only in the 5m and 1h blocks: they are answered from them.
	early, _ := promQuery(t, s.url("/prometheus"), "team-a", `max_over_time(`+sgGauge+`[1h])`, start.Add(time.Hour), start.Add(4*time.Hour), time.Hour,
		url.Values{"max_source_resolution": {"5m"}})
	testutil.Assert(t, len(early) > 0, "no answer from the downsampled blocks")
}
