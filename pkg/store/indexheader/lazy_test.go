package indexheader

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stratametrics/strata/pkg/store/storetest"
)

type lazyFixture struct {
	bkt        *countingBucket
	headerPath string
	metrics    *Metrics
	clock      *storetest.Clock
	lr         *LazyReader
}

func newLazyFixture(t *testing.T) *lazyFixture {
	t.Helper()
	local := writeBlock(t, t.TempDir(), manyNamesSeries())
	f := &lazyFixture{
		bkt:        &countingBucket{BucketReader: newBucket(t, local, testIndexPath)},
		headerPath: filepath.Join(t.TempDir(), "01HZZZZZZZZZZZZZZZZZZZZZZZ", "index-header"),
		metrics:    NewMetrics(prometheus.NewRegistry()),
		clock:      storetest.NewClock(time.Unix(1000, 0)),
	}
	f.lr = NewLazyReader(f.bkt, testIndexPath, f.headerPath, f.metrics, nil, f.clock.Now)
	return f
}

// builds returns how many times the index-header was built (each Build reads the index's attributes once).
func (f *lazyFixture) builds() int {
	attributes, _, _, _ := f.bkt.counts()
	return attributes
}

func TestLazyReaderConcurrentAcquireBuildsOnce(t *testing.T) {
	f := newLazyFixture(t)
	f.bkt.attributesDelay = 50 * time.Millisecond // Let the other callers pile up behind the first build.
	testutil.Assert(t, !f.lr.Loaded())
	testutil.Equals(t, 0, f.builds())

	const n = 32
	var (
		wg       sync.WaitGroup
		readers  = make([]*Reader, n)
		releases = make([]func(), n)
		errs     = make([]error, n)
		start    = make(chan struct{})
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			readers[i], releases[i], errs[i] = f.lr.Acquire(context.Background())
		}()
	}
	close(start)
	wg.Wait()
	for i := 0; i < n; i++ {
		testutil.Ok(t, errs[i])
		testutil.Assert(t, readers[i] == readers[0], "reader %d differs", i)
	}
	testutil.Equals(t, 1, f.builds())
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.metrics.loadTotal))
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(f.metrics.loadFailedTotal))
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.metrics.loaded))
	testutil.Equals(t, 1, promtestutil.CollectAndCount(f.metrics.buildDuration))
	testutil.Assert(t, f.lr.Loaded())
	testutil.Assert(t, len(readers[0].LabelNames()) > 0)

	for _, release := range releases {
		release()
		release() // Releasing twice is harmless.
	}
	f.clock.Add(time.Second)
	testutil.Assert(t, f.lr.UnloadIfIdle(time.Second))
}

func TestLazyReaderUnloadIfIdle(t *testing.T) {
	ctx := context.Background()
	f := newLazyFixture(t)
	testutil.Assert(t, !f.lr.UnloadIfIdle(0), "nothing loaded yet")

	r1, release1, err := f.lr.Acquire(ctx)
	testutil.Ok(t, err)
	_, release2, err := f.lr.Acquire(ctx)
	testutil.Ok(t, err)

	for _, tc := range []struct {
		name       string
		advance    time.Duration
		release    func()
		idle       time.Duration
		wantUnload bool
	}{
		{name: "two holders", advance: time.Hour, idle: 0},
		{name: "one holder left", advance: time.Hour, release: release1, idle: 0},
		{name: "released just now", release: release2, idle: time.Minute},
		{name: "idle for less than idle time", advance: 59 * time.Second, idle: time.Minute},
		{name: "idle for idle time", advance: time.Second, idle: time.Minute, wantUnload: true},
		{name: "already unloaded", advance: time.Hour, idle: time.Minute},
	} {
		f.clock.Add(tc.advance)
		if tc.release != nil {
			tc.release()
		}
		testutil.Equals(t, tc.wantUnload, f.lr.UnloadIfIdle(tc.idle), tc.name)
	}
	testutil.Assert(t, !f.lr.Loaded())
	testutil.Equals(t, 1.0, promtestutil.ToFloat64(f.metrics.unloadTotal))
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(f.metrics.loaded))
	// The unloaded reader still works for anyone who kept it.
	testutil.Assert(t, len(r1.LabelNames()) > 0)

	// The file is kept: loading again does not rebuild.
	_, err = os.Stat(f.headerPath)
	testutil.Ok(t, err)
	r2, release3, err := f.lr.Acquire(ctx)
	testutil.Ok(t, err)
	testutil.Assert(t, r2 != r1)
	testutil.Equals(t, 1, f.builds())
	testutil.Equals(t, 2.0, promtestutil.ToFloat64(f.metrics.loadTotal))

	// A fresh load counts as a use: not idle right away.
	release3()
	testutil.Assert(t, !f.lr.UnloadIfIdle(time.Minute))
	f.clock.Add(time.Minute)
	testutil.Assert(t, f.lr.UnloadIfIdle(time.Minute))
}

func TestLazyReaderRebuildsMissingOrBadFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{name: "deleted", damage: func(t *testing.T, path string) { testutil.Ok(t, os.Remove(path)) }},
		{name: "truncated", damage: func(t *testing.T, path string) { testutil.Ok(t, os.Truncate(path, 100)) }},
		{name: "corrupted", damage: func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			testutil.Ok(t, err)
			testutil.Ok(t, os.WriteFile(path, flipByte(b, len(b)/2), 0o600))
		}},
		{name: "other format version", damage: func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			testutil.Ok(t, err)
			b[4] = FormatVersion + 1
			testutil.Ok(t, os.WriteFile(path, b, 0o600))
		}},
		{name: "empty", damage: func(t *testing.T, path string) { testutil.Ok(t, os.WriteFile(path, nil, 0o600)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newLazyFixture(t)
			r, release, err := f.lr.Acquire(ctx)
			testutil.Ok(t, err)
			want := r.LabelNames()
			release()
			testutil.Assert(t, f.lr.UnloadIfIdle(0))
			testutil.Equals(t, 1, f.builds())

			tc.damage(t, f.headerPath)

			r, release, err = f.lr.Acquire(ctx)
			testutil.Ok(t, err)
			defer release()
			testutil.Equals(t, want, r.LabelNames())
			testutil.Equals(t, 2, f.builds())
			testutil.Equals(t, 0.0, promtestutil.ToFloat64(f.metrics.loadFailedTotal))
			// The rebuilt file is valid.
			_, err = Open(f.headerPath)
			testutil.Ok(t, err)
		})
	}
}

func TestLazyReaderLoadFailure(t *testing.T) {
	ctx := context.Background()
	f := newLazyFixture(t)
	f.lr = NewLazyReader(f.bkt, "t1/missing/index", f.headerPath, f.metrics, nil, f.clock.Now)
	for i := 1; i <= 2; i++ {
		_, _, err := f.lr.Acquire(ctx)
		testutil.NotOk(t, err)
		// Failures are not cached: every Acquire tries again.
		testutil.Equals(t, float64(i), promtestutil.ToFloat64(f.metrics.loadFailedTotal))
		testutil.Equals(t, float64(i), promtestutil.ToFloat64(f.metrics.loadTotal))
	}
	testutil.Assert(t, !f.lr.Loaded())
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(f.metrics.loaded))
	_, err := os.Stat(f.headerPath)
	testutil.Assert(t, os.IsNotExist(err))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	f = newLazyFixture(t)
	_, _, err = f.lr.Acquire(cancelled)
	testutil.NotOk(t, err)
	_, release, err := f.lr.Acquire(ctx)
	testutil.Ok(t, err)
	release()
}

func TestLazyReaderClose(t *testing.T) {
	ctx := context.Background()
	f := newLazyFixture(t)
	r, release, err := f.lr.Acquire(ctx)
	testutil.Ok(t, err)
	testutil.Ok(t, f.lr.Close())
	testutil.Assert(t, !f.lr.Loaded())
	testutil.Equals(t, 0.0, promtestutil.ToFloat64(f.metrics.loaded))
	// The holder's reader keeps working; release after Close is harmless.
	_, ok := r.PostingsRange("", "")
	testutil.Assert(t, ok)
	release()

	_, _, err = f.lr.Acquire(ctx)
	testutil.NotOk(t, err)
	testutil.Assert(t, !f.lr.UnloadIfIdle(0))
	testutil.Ok(t, f.lr.Close())

	// Nil metrics, logger and clock are allowed.
	lr := NewLazyReader(f.bkt, testIndexPath, f.headerPath, nil, nil, nil)
	_, release, err = lr.Acquire(ctx)
	testutil.Ok(t, err)
	release()
	testutil.Ok(t, lr.Close())
}
