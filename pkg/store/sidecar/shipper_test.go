package sidecar

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// createPromBlock writes a Prometheus block of one series (100 samples from mint, 1ms apart) into dir, as
// Prometheus's TSDB would, at the given compaction level.
func createPromBlock(t *testing.T, dir string, mint int64, level int) ulid.ULID {
	t.Helper()
	s := storage.NewListSeries(labels.FromStrings("__name__", "up", "job", "api"), chunks.GenerateSamples(int(mint), 100))
	p, err := tsdb.CreateBlock([]storage.Series{s}, dir, 0, promslog.NewNopLogger())
	testutil.Ok(t, err)
	id := ulid.MustParse(filepath.Base(p))
	if level > 1 {
		m, err := block.ReadMetaFromDir(p)
		testutil.Ok(t, err)
		m.Compaction.Level = level
		b, err := json.Marshal(m.BlockMeta)
		testutil.Ok(t, err)
		testutil.Ok(t, os.WriteFile(filepath.Join(p, block.MetaFilename), b, 0o600))
	}
	return id
}

func TestSidecar_ShipsBlocks(t *testing.T) {
	// A Prometheus directory once shipped by a Thanos sidecar: thanos.shipper.json (Thanos's format, as its
	// shipper writes it) lists the first block, which is not in the bucket (Thanos shipped it elsewhere, or
	// it was compacted away there): it is not uploaded again. The second (level 1) is; the third (compacted by
	// Prometheus, level 2) only with --shipper.upload-compacted.
	for _, tc := range []struct {
		name            string
		uploadCompacted bool
		want            []int // blocks uploaded, by index
	}{
		{name: "level 1 only", want: []int{1}},
		{name: "upload compacted", uploadCompacted: true, want: []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ids := []ulid.ULID{
				createPromBlock(t, dir, 0, 1),
				createPromBlock(t, dir, 7_200_000, 1),
				createPromBlock(t, dir, 14_400_000, 2),
			}
			thanosFile := "{\n\t\"version\": 1,\n\t\"uploaded\": [\n\t\t\"" + ids[0].String() + "\"\n\t]\n}"
			testutil.Ok(t, os.WriteFile(filepath.Join(dir, block.ShipperMetaFilename), []byte(thanosFile), 0o600))

			bkt := objstore.NewInMemBucket()
			f := newFakeProm(t, promExt)
			s := newTestSidecar(t, f, bkt, func(c *Config) {
				c.TSDBPath = dir
				c.UploadCompacted = tc.uploadCompacted
			})
			stop, err := runSidecar(t, s)
			testutil.Ok(t, err)
			testutil.Ok(t, stop()) // ships at start, and again at shutdown

			var wantIDs []string
			for _, i := range tc.want {
				wantIDs = append(wantIDs, ids[i].String())
			}
			var got []string
			testutil.Ok(t, bkt.Iter(context.Background(), "team-a/", func(name string) error {
				got = append(got, filepath.Base(name))
				return nil
			}))
			slices.Sort(got)
			slices.Sort(wantIDs)
			testutil.Equals(t, wantIDs, got)
			var root []string
			testutil.Ok(t, bkt.Iter(context.Background(), "", func(name string) error { root = append(root, name); return nil }))
			testutil.Equals(t, []string{"team-a/"}, root) // nothing outside the tenant's prefix

			for _, i := range tc.want {
				m, err := block.ReadMetaFromBucket(context.Background(), objstore.NewPrefixedBucket(bkt, "team-a"), ids[i])
				testutil.Ok(t, err)
				testutil.Equals(t, map[string]string{"cluster": "eu1", "replica": "a", "tenant_id": "team-a"}, m.Thanos.Labels)
				testutil.Equals(t, block.SidecarSource, m.Thanos.Source)
			}
			rec, err := block.ReadShipperMeta(dir)
			testutil.Ok(t, err)
			want := append([]ulid.ULID{ids[0]}, func() (out []ulid.ULID) {
				for _, i := range tc.want {
					out = append(out, ids[i])
				}
				return out
			}()...)
			testutil.Equals(t, want, rec.Uploaded)

			// A restarted sidecar uploads nothing more.
			before := len(got)
			s2 := newTestSidecar(t, f, bkt, func(c *Config) { c.TSDBPath = dir; c.UploadCompacted = tc.uploadCompacted })
			stop2, err := runSidecar(t, s2)
			testutil.Ok(t, err)
			testutil.Ok(t, stop2())
			n, err := s2.shipper.Sync(context.Background())
			testutil.Ok(t, err)
			testutil.Equals(t, 0, n)
			var after []string
			testutil.Ok(t, bkt.Iter(context.Background(), "team-a/", func(name string) error { after = append(after, name); return nil }))
			testutil.Equals(t, before, len(after))
		})
	}
}

func TestSidecar_ShipsWithLabelsAfterReload(t *testing.T) {
	// Prometheus is reloaded with other external labels; a block cut after that is uploaded with the new ones,
	// even before the next periodic refresh of the labels.
	dir := t.TempDir()
	bkt := objstore.NewInMemBucket()
	f := newFakeProm(t, promExt)
	s := newTestSidecar(t, f, bkt, func(c *Config) {
		c.TSDBPath = dir
		c.RefreshInterval, c.ShipInterval = time.Hour, time.Hour
	})
	_, err := runSidecar(t, s)
	testutil.Ok(t, err)

	f.mtx.Lock()
	f.configYAML = "global:\n  external_labels:\n    cluster: eu2\n    replica: a\n"
	f.mtx.Unlock()
	id := createPromBlock(t, dir, 0, 1)
	s.ship(context.Background())
	m, err := block.ReadMetaFromBucket(context.Background(), objstore.NewPrefixedBucket(bkt, "team-a"), id)
	testutil.Ok(t, err)
	testutil.Equals(t, map[string]string{"cluster": "eu2", "replica": "a", "tenant_id": "team-a"}, m.Thanos.Labels)
	testutil.Equals(t, labels.FromStrings("cluster", "eu2", "replica", "a"), s.ExternalLabels())
}
