package compact

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Size of BenchmarkCompact_RF3: benchBlocks consecutive 2h blocks of benchSeries series, a sample every 30s,
// shipped by each of 3 ingesters (RF 3: the replicas hold the same samples).
const (
	benchReplicas = 3
	benchBlocks   = 3
	benchSeries   = 10_000
	benchStep     = 30_000
)

// rf3Blocks writes the blocks of one ingester (benchBlocks × 2h) into dir/<replica>/ and copies them, under new
// ULIDs, for the other replicas. It returns the block dirs per time range ([range][replica]) and the number of
// samples of one replica.
func rf3Blocks(b *testing.B, dir string, series int) ([][]string, int64) {
	b.Helper()
	logger := slog.New(slog.DiscardHandler)
	dirs := make([][]string, benchBlocks)
	var samples int64
	for k := range benchBlocks {
		mint := int64(k) * 2 * Resolution1h
		ss := make([]storage.Series, 0, series)
		for i := range series {
			lset := labels.FromStrings("__name__", fmt.Sprintf("bench_metric_%d", i%100), "instance", fmt.Sprintf("host-%d", i/100), "job", "bench")
			var cs []chunks.Sample
			v := float64(i)
			for ts := mint; ts < mint+2*Resolution1h; ts += benchStep {
				v += float64((ts/benchStep)%7 + 1)
				cs = append(cs, tsample{t: ts, f: v})
			}
			samples += int64(len(cs))
			ss = append(ss, storage.NewListSeries(lset, cs))
		}
		src, err := tsdb.CreateBlock(ss, filepath.Join(dir, "0"), 1000*Resolution1h, logger)
		testutil.Ok(b, err)
		m, err := block.ReadMetaFromDir(src)
		testutil.Ok(b, err)
		m.Thanos.Labels = map[string]string{tenancy.TenantIDLabel: "bench"}
		m.Thanos.Source = block.ReceiveSource
		testutil.Ok(b, m.WriteToDir(log.NewNopLogger(), src))
		dirs[k] = append(dirs[k], src)
		for r := 1; r < benchReplicas; r++ {
			cp := *m
			cp.ULID = ulid.MustNew(ulid.Now(), nil)
			cp.Compaction.Sources = []ulid.ULID{cp.ULID}
			dst := filepath.Join(dir, strconv.Itoa(r), cp.ULID.String())
			copyDir(b, src, dst)
			testutil.Ok(b, cp.WriteToDir(log.NewNopLogger(), dst))
			dirs[k] = append(dirs[k], dst)
		}
	}
	return dirs, samples
}

func copyDir(b *testing.B, src, dst string) {
	b.Helper()
	testutil.Ok(b, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o640)
	}))
}

// memPeak measures, around a function, the peak resident set of the process (VmHWM, reset through
// /proc/self/clear_refs after a GC that returns freed memory; 0 when the kernel does not allow it) and the peak
// of live heap objects above what was live before (sampled every 5ms).
func memPeak(f func()) (rssBytes, heapBytes uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	resetOK := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil

	var (
		wg   sync.WaitGroup
		peak uint64
		stop = make(chan struct{})
	)
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	f()
	close(stop)
	wg.Wait()
	if resetOK {
		rssBytes = vmHWM()
	}
	if peak < base {
		return rssBytes, 0
	}
	return rssBytes, peak - base
}

func vmHWM() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

// liveSamples sums numSamples of the blocks of tenant "bench" not marked for deletion.
func liveSamples(b *testing.B, bkt objstore.Bucket) (samples uint64, blocks int) {
	b.Helper()
	d, err := block.NewMetaFetcher(bkt, 4, 0, nil).Fetch(context.Background(), "bench")
	testutil.Ok(b, err)
	for _, m := range d.Metas {
		samples += m.Stats.NumSamples
		blocks++
	}
	return samples, blocks
}

// BenchmarkCompact_RF3 compacts the blocks of an RF-3 cluster (3 ingesters × benchBlocks 2h blocks of
// benchSeries series) with Strata's compactor (one cycle over a filesystem bucket: download, verification,
// vertical merge of the replicas, upload, deletion marks) and, as the baseline, with Prometheus's
// LeveledCompactor in process over the same block directories, one Compact per 2h range (the same merges
// Strata's planner makes). Reported: input samples per second of each, their ratio (Strata / Prometheus), and
// each one's peak RSS (of the whole test process) and peak live heap above what the benchmark itself holds. Both
// must end with each sample once.
func BenchmarkCompact_RF3(b *testing.B) {
	series := benchSeries
	if testing.Short() {
		series = 1000
	}
	ctx := context.Background()
	src, perReplica := rf3Blocks(b, b.TempDir(), series)
	input := float64(perReplica * benchReplicas)

	var strataBlocks int
	var strataSec, promSec, strataRSS, promRSS, strataHeap, promHeap float64
	b.ResetTimer()
	for range b.N {
		// Strata: a bucket holding the 9 blocks, one compaction cycle.
		b.StopTimer()
		root, err := filesystem.NewBucket(b.TempDir())
		testutil.Ok(b, err)
		tbkt := objstore.NewPrefixedBucket(root, "bench")
		for _, rng := range src {
			for _, d := range rng {
				m, err := block.ReadMetaFromDir(d)
				testutil.Ok(b, err)
				testutil.Ok(b, block.Upload(ctx, log.NewNopLogger(), tbkt, d, m))
			}
		}
		cfg := DefaultConfig()
		cfg.ConsistencyDelay = 0
		c, err := New(cfg, root, b.TempDir(), func(string) time.Duration { return 0 }, log.NewNopLogger(), nil, nil)
		testutil.Ok(b, err)
		b.StartTimer()
		var runErr error
		start := time.Now()
		rss, heap := memPeak(func() { runErr = c.RunOnce(ctx) })
		strataSec += time.Since(start).Seconds()
		strataRSS, strataHeap = max(strataRSS, float64(rss)), max(strataHeap, float64(heap))
		b.StopTimer()
		testutil.Ok(b, runErr)
		got, blocks := liveSamples(b, root)
		testutil.Equals(b, uint64(perReplica), got, "Strata: each sample once")
		strataBlocks = blocks

		// Prometheus: LeveledCompactor over the same directories, one Compact per range.
		dest := b.TempDir()
		comp, err := tsdb.NewLeveledCompactor(ctx, nil, slog.New(slog.DiscardHandler), []int64{2 * Resolution1h}, nil, nil)
		testutil.Ok(b, err)
		var ids []ulid.ULID
		b.StartTimer()
		start = time.Now()
		rss, heap = memPeak(func() {
			for _, rng := range src {
				var out []ulid.ULID
				if out, runErr = comp.Compact(dest, rng, nil); runErr != nil {
					return
				}
				ids = append(ids, out...)
			}
		})
		promSec += time.Since(start).Seconds()
		promRSS, promHeap = max(promRSS, float64(rss)), max(promHeap, float64(heap))
		b.StopTimer()
		testutil.Ok(b, runErr)
		var promSamples uint64
		for _, id := range ids {
			m, err := block.ReadMetaFromDir(filepath.Join(dest, id.String()))
			testutil.Ok(b, err)
			promSamples += m.Stats.NumSamples
		}
		testutil.Equals(b, uint64(perReplica), promSamples, "Prometheus: each sample once")
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(input*n/strataSec, "strata_samples/s")
	b.ReportMetric(input*n/promSec, "prom_samples/s")
	b.ReportMetric((input*n/strataSec)/(input*n/promSec), "strata/prom_ratio")
	b.ReportMetric(strataRSS/(1<<20), "strata_peak_rss_MiB")
	b.ReportMetric(promRSS/(1<<20), "prom_peak_rss_MiB")
	b.ReportMetric(strataHeap/(1<<20), "strata_peak_heap_MiB")
	b.ReportMetric(promHeap/(1<<20), "prom_peak_heap_MiB")
	b.ReportMetric(input, "input_samples")
	b.ReportMetric(float64(strataBlocks), "strata_blocks_after")
}

// BenchmarkNormalise rewrites a 2h block of benchSeries series with external labels cluster and replica.
func BenchmarkNormalise(b *testing.B) {
	series := benchSeries
	if testing.Short() {
		series = 1000
	}
	var ss []tseries
	for i := range series {
		ss = append(ss, tseries{
			lset:    labels.FromStrings("__name__", fmt.Sprintf("bench_metric_%d", i%100), "instance", fmt.Sprintf("host-%d", i/100)),
			samples: floats(0, 2*Resolution1h, benchStep, float64(i)),
		})
	}
	src := labelledBlock(b, b.TempDir(), ss, sidecarExt, block.SidecarSource)
	m, err := block.ReadMetaFromDir(src)
	testutil.Ok(b, err)
	b.ResetTimer()
	var sec float64
	for i := range b.N {
		out := b.TempDir()
		start := time.Now()
		_, _, err := Normalise(context.Background(), log.NewNopLogger(), src, out, ulid.MustNew(uint64(i+1), nil))
		sec += time.Since(start).Seconds()
		testutil.Ok(b, err)
	}
	b.ReportMetric(float64(m.Stats.NumSamples)*float64(b.N)/sec, "samples/s")
	b.ReportMetric(float64(m.Stats.NumSeries)*float64(b.N)/sec, "series/s")
}
