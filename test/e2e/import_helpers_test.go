package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

var (
	s3ServerOnce sync.Once
	s3ServerBin  string
	s3ServerErr  error
)

// startS3Server builds test/e2e/s3server once (an S3-compatible server, gofakes3 in memory) and starts it on a
// free loopback port with the buckets given, plus extra flags; it returns its address once it listens (at most
// 10s), and kills it when the test ends.
func startS3Server(t *testing.T, buckets []string, extra ...string) string {
	t.Helper()
	s3ServerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "strata-e2e-s3server")
		if err != nil {
			s3ServerErr = err
			return
		}
		s3ServerBin = filepath.Join(dir, "s3server")
		cmd := exec.Command("go", "build", "-o", s3ServerBin, "./test/e2e/s3server")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			s3ServerErr = errors.Wrapf(err, "build s3server: %s", out)
		}
	})
	testutil.Ok(t, s3ServerErr)
	p := startProc(t, t.TempDir(), "s3server", s3ServerBin, append([]string{"-listen=127.0.0.1:0", "-buckets=" + strings.Join(buckets, ",")}, extra...)...)
	re := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m[1]
		}
		select {
		case <-p.exited:
			t.Fatalf("s3server exited: %v\n%s", p.err, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("s3server did not listen within 10s\n%s", p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// s3BucketConfig writes a Thanos objstore config file for bucket of the S3 server at addr (objstore's real S3
// provider: plain HTTP, path-style) and returns its path.
func s3BucketConfig(t *testing.T, addr, bucket string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), bucket+".yml")
	conf := fmt.Sprintf(`type: S3
config:
  bucket: %s
  endpoint: %s
  region: us-east-1
  insecure: true
  access_key: strata-test
  secret_key: strata-test-secret
  bucket_lookup_type: path
`, bucket, addr)
	testutil.Ok(t, os.WriteFile(p, []byte(conf), 0o600))
	return p
}

// openBucket opens the bucket of an objstore config file in the test process.
func openBucket(t *testing.T, confFile string) objstore.Bucket {
	t.Helper()
	bkt, err := block.NewBucket(block.BucketConfig{ConfigFile: confFile}, t.TempDir(), log.NewNopLogger(), nil)
	testutil.Ok(t, err)
	t.Cleanup(func() { _ = bkt.Close() })
	return bkt
}

// mirrorBucket copies every object of src into dst under the same name.
func mirrorBucket(t *testing.T, src, dst objstore.Bucket) {
	t.Helper()
	ctx := context.Background()
	testutil.Ok(t, src.Iter(ctx, "", func(name string) error {
		rc, err := src.Get(ctx, name)
		if err != nil {
			return err
		}
		defer rc.Close()
		return dst.Upload(ctx, name, rc)
	}, objstore.WithRecursiveIter()))
}

// objectSums returns the SHA-256 (hex) of every object under prefix of bkt, by name relative to prefix.
func objectSums(t *testing.T, bkt objstore.Bucket, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	testutil.Ok(t, bkt.Iter(ctx, prefix, func(name string) error {
		rc, err := bkt.Get(ctx, name)
		if err != nil {
			return err
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			return err
		}
		out[strings.TrimPrefix(name, prefix)] = hex.EncodeToString(h.Sum(nil))
		return nil
	}, objstore.WithRecursiveIter()))
	return out
}

// tenantBlocks lists the block directories under tenant/ of bkt: for each ULID, its object names (relative to
// the block directory). Other entries (not ULIDs) are returned as others.
func tenantBlocks(t *testing.T, bkt objstore.Bucket, tenant string) (blocks map[ulid.ULID][]string, others []string) {
	t.Helper()
	blocks = map[ulid.ULID][]string{}
	prefix := tenant + "/"
	testutil.Ok(t, bkt.Iter(context.Background(), prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		dir, file, _ := strings.Cut(rel, "/")
		id, err := ulid.Parse(dir)
		if err != nil {
			others = append(others, rel)
			return nil
		}
		blocks[id] = append(blocks[id], file)
		return nil
	}, objstore.WithRecursiveIter()))
	for _, files := range blocks {
		sort.Strings(files)
	}
	return blocks, others
}

// checkNoHalfBlock checks the destination tenant after an interrupted import: every block with a meta.json has
// every file its meta.json lists, of the listed size and SHA-256. It returns the blocks with a meta.json and
// those with files but none (invisible to readers; copied again by a re-run).
func checkNoHalfBlock(t *testing.T, bkt objstore.Bucket, tenant string) (complete, partial []ulid.ULID) {
	t.Helper()
	ctx := context.Background()
	blocks, _ := tenantBlocks(t, bkt, tenant)
	for id, files := range blocks {
		if !slices.Contains(files, block.MetaFilename) {
			partial = append(partial, id)
			continue
		}
		complete = append(complete, id)
		m, err := block.ReadMetaFromBucket(ctx, objstore.NewPrefixedBucket(bkt, tenant), id)
		testutil.Ok(t, err)
		sums := objectSums(t, bkt, path.Join(tenant, id.String())+"/")
		testutil.Assert(t, len(m.Thanos.Files) > 1, "block %s: meta.json lists no files", id)
		for _, f := range m.Thanos.Files {
			if f.RelPath == block.MetaFilename {
				continue
			}
			attrs, err := bkt.Attributes(ctx, path.Join(tenant, id.String(), f.RelPath))
			testutil.Ok(t, err, "block %s has meta.json but not %s", id, f.RelPath)
			testutil.Equals(t, f.SizeBytes, attrs.Size, "block %s: size of %s", id, f.RelPath)
			testutil.Assert(t, f.Hash != nil, "block %s: no hash for %s", id, f.RelPath)
			testutil.Equals(t, f.Hash.Value, sums[f.RelPath], "block %s: SHA-256 of %s", id, f.RelPath)
		}
	}
	return complete, partial
}

// copyBlockDir copies the block in dir to parent/<new ULID> and returns the new directory and its meta (with the
// new ULID, not yet written).
func copyBlockDir(t *testing.T, dir, parent string) (string, *block.Meta) {
	t.Helper()
	m, err := block.ReadMetaFromDir(dir)
	testutil.Ok(t, err)
	m.ULID = ulid.Make()
	out := filepath.Join(parent, m.ULID.String())
	testutil.Ok(t, os.CopyFS(out, os.DirFS(dir)))
	return out, m
}

// waitOutput waits (at most timeout) until the process's output contains s.
func waitOutput(t *testing.T, p *proc, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.out.String(), s) {
		select {
		case <-p.exited:
			t.Fatalf("process exited (%v) before printing %q:\n%s", p.err, s, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %s:\n%s", s, timeout, p.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
