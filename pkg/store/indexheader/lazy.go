package indexheader

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/thanos-io/objstore"
)

// Metrics are the metrics of lazy index-header readers. One Metrics is shared by all LazyReaders of a process.
type Metrics struct {
	loadTotal       prometheus.Counter
	unloadTotal     prometheus.Counter
	loadFailedTotal prometheus.Counter
	buildDuration   prometheus.Histogram
	loaded          prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg, which may be nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		loadTotal: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_bucket_store_indexheader_lazy_load_total",
			Help: "Total number of index-header lazy load operations.",
		}),
		unloadTotal: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_bucket_store_indexheader_lazy_unload_total",
			Help: "Total number of index-header lazy unload operations.",
		}),
		loadFailedTotal: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_bucket_store_indexheader_lazy_load_failed_total",
			Help: "Total number of failed index-header lazy load operations.",
		}),
		buildDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_bucket_store_indexheader_build_duration_seconds",
			Help:    "Duration of building index-headers from object storage, in seconds.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		loaded: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_bucket_store_indexheader_loaded",
			Help: "Number of index-headers currently loaded in memory.",
		}),
	}
}

// loadCall is an in-flight load that concurrent Acquire calls wait for.
type loadCall struct {
	done chan struct{}
	err  error
}

// LazyReader builds the header file on first use if missing (concurrent callers wait for one build), opens it,
// and unloads it (closes the Reader, keeps the file) when idle. It is safe for concurrent use.
type LazyReader struct {
	bkt       objstore.BucketReader
	indexPath string
	path      string
	metrics   *Metrics
	logger    log.Logger
	now       func() time.Time

	mtx          sync.Mutex
	reader       *Reader
	refs         int       // Acquired and not yet released.
	lastReleased time.Time // Last release (or load) time.
	loading      *loadCall // Non-nil while a load is in progress.
	closed       bool
}

// NewLazyReader returns a LazyReader of the index at indexPath whose header file is path. Nothing is loaded until
// the first Acquire. m, logger and now may be nil (no metrics registered, no logging, time.Now).
func NewLazyReader(bkt objstore.BucketReader, indexPath, path string, m *Metrics, logger log.Logger, now func() time.Time) *LazyReader {
	if m == nil {
		m = NewMetrics(nil)
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	if now == nil {
		now = time.Now
	}
	return &LazyReader{bkt: bkt, indexPath: indexPath, path: path, metrics: m, logger: logger, now: now}
}

// Acquire returns the loaded reader, loading it first if needed, and a release func that must be called once the
// reader is no longer used; the reader stays loaded at least until release.
func (l *LazyReader) Acquire(ctx context.Context) (*Reader, func(), error) {
	for {
		l.mtx.Lock()
		if l.closed {
			l.mtx.Unlock()
			return nil, nil, errors.Newf("acquire index-header of %s: reader closed", l.indexPath)
		}
		if l.reader != nil {
			r := l.acquireLocked()
			l.mtx.Unlock()
			return r, l.releaseFunc(), nil
		}
		if call := l.loading; call != nil {
			l.mtx.Unlock()
			select {
			case <-ctx.Done():
				return nil, nil, errors.Wrapf(ctx.Err(), "wait for index-header of %s", l.indexPath)
			case <-call.done:
			}
			// A load cancelled by its caller's context is retried with ours; other errors are shared.
			if call.err != nil && !errors.Is(call.err, context.Canceled) && !errors.Is(call.err, context.DeadlineExceeded) {
				return nil, nil, call.err
			}
			continue
		}

		call := &loadCall{done: make(chan struct{})}
		l.loading = call
		l.mtx.Unlock()

		r, err := l.load(ctx)

		l.mtx.Lock()
		l.loading = nil
		call.err = err
		close(call.done)
		if err != nil {
			l.mtx.Unlock()
			return nil, nil, err
		}
		if l.closed {
			l.mtx.Unlock()
			_ = r.Close()
			return nil, nil, errors.Newf("acquire index-header of %s: reader closed while loading", l.indexPath)
		}
		l.reader = r
		l.lastReleased = l.now()
		l.metrics.loaded.Inc()
		r = l.acquireLocked()
		l.mtx.Unlock()
		return r, l.releaseFunc(), nil
	}
}

func (l *LazyReader) acquireLocked() *Reader {
	l.refs++
	return l.reader
}

func (l *LazyReader) releaseFunc() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mtx.Lock()
			defer l.mtx.Unlock()
			l.refs--
			l.lastReleased = l.now()
		})
	}
}

// load opens the header file, building it first if it is missing. If an existing file cannot be opened
// (corrupted, older format version), it is deleted and rebuilt once.
func (l *LazyReader) load(ctx context.Context) (*Reader, error) {
	l.metrics.loadTotal.Inc()
	r, err := l.openOrBuild(ctx)
	if err != nil {
		l.metrics.loadFailedTotal.Inc()
		return nil, err
	}
	return r, nil
}

func (l *LazyReader) openOrBuild(ctx context.Context) (*Reader, error) {
	_, statErr := os.Stat(l.path)
	switch {
	case statErr == nil:
		r, err := Open(l.path)
		if err == nil {
			return r, nil
		}
		level.Warn(l.logger).Log("msg", "cannot open index-header, rebuilding it", "path", l.path, "err", err)
		if err := os.Remove(l.path); err != nil && !os.IsNotExist(err) {
			return nil, errors.Wrapf(err, "remove unreadable index-header %s", l.path)
		}
	case !os.IsNotExist(statErr):
		return nil, errors.Wrapf(statErr, "stat index-header %s", l.path)
	}

	start := l.now()
	if err := Build(ctx, l.bkt, l.indexPath, l.path); err != nil {
		return nil, errors.Wrapf(err, "build index-header %s", l.path)
	}
	dur := l.now().Sub(start)
	l.metrics.buildDuration.Observe(dur.Seconds())
	level.Debug(l.logger).Log("msg", "built index-header", "index", l.indexPath, "path", l.path, "duration", dur)

	r, err := Open(l.path)
	if err != nil {
		return nil, errors.Wrapf(err, "open freshly built index-header %s", l.path)
	}
	return r, nil
}

// UnloadIfIdle unloads the reader if nobody holds it and it was last released at least idle ago; it reports
// whether it did. The header file is kept.
func (l *LazyReader) UnloadIfIdle(idle time.Duration) bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	if l.reader == nil || l.refs > 0 || l.now().Sub(l.lastReleased) < idle {
		return false
	}
	l.unloadLocked()
	return true
}

func (l *LazyReader) unloadLocked() {
	if l.reader == nil {
		return
	}
	if err := l.reader.Close(); err != nil {
		level.Warn(l.logger).Log("msg", "close index-header", "path", l.path, "err", err)
	}
	l.reader = nil
	l.metrics.unloadTotal.Inc()
	l.metrics.loaded.Dec()
}

// Loaded reports whether the reader is in memory.
func (l *LazyReader) Loaded() bool {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	return l.reader != nil
}

// Close unloads the reader, even if it is held (holders keep a working reader, see Reader.Close); later Acquire
// calls fail. The header file is kept.
func (l *LazyReader) Close() error {
	l.mtx.Lock()
	defer l.mtx.Unlock()
	l.closed = true
	l.unloadLocked()
	return nil
}
