package block

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// ImportProgress is told how an import advances. Its methods may be called from several goroutines.
type ImportProgress interface {
	// Start is called once, before anything is copied, with the blocks and bytes to copy.
	Start(blocks int, bytes int64)
	// Copied is called as n more bytes of block files have been copied.
	Copied(n int64)
	// BlockDone is called when block id is complete (its meta.json written).
	BlockDone(id ulid.ULID)
	// Finish is called once when the import ends; err is nil when every block was copied.
	Finish(err error)
}

// NewImportProgress returns a progress bar (bytes, blocks, ETA) written to w when w is a terminal, and periodic
// log lines (every interval; one per block copied) otherwise. now (time.Now when nil) computes the logged ETA.
func NewImportProgress(logger log.Logger, w io.Writer, terminal bool, interval time.Duration, now func() time.Time) ImportProgress {
	if now == nil {
		now = time.Now
	}
	if terminal {
		return newBarProgress(logger, w, 100*time.Millisecond)
	}
	return &logProgress{logger: logger, interval: interval, now: now}
}

// NewImportProgressFor is NewImportProgress for the file f (a bar when f is a terminal, e.g. stderr in a shell).
func NewImportProgressFor(logger log.Logger, f *os.File, interval time.Duration) ImportProgress {
	return NewImportProgress(logger, f, term.IsTerminal(int(f.Fd())), interval, nil)
}

// counts are the blocks and bytes of an import, done and in total.
type counts struct {
	mtx                     sync.Mutex
	doneBlocks, totalBlocks int
	doneBytes, totalBytes   int64
}

// logProgress logs a line every interval and one per block copied.
type logProgress struct {
	logger   log.Logger
	interval time.Duration
	now      func() time.Time

	counts
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

func (p *logProgress) Start(blocks int, bytes int64) {
	p.mtx.Lock()
	p.start, p.totalBlocks, p.totalBytes = p.now(), blocks, bytes
	p.mtx.Unlock()
	if p.interval <= 0 {
		return
	}
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(p.interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.line("import progress")
			case <-p.stop:
				return
			}
		}
	}()
}

func (p *logProgress) Copied(n int64) {
	p.mtx.Lock()
	p.doneBytes += n
	p.mtx.Unlock()
}

func (p *logProgress) BlockDone(id ulid.ULID) {
	p.mtx.Lock()
	p.doneBlocks++
	p.mtx.Unlock()
	p.line("imported block", "block", id)
}

func (p *logProgress) Finish(err error) {
	if p.stop != nil {
		close(p.stop)
		p.wg.Wait()
	}
	if err == nil {
		p.line("import done")
	}
}

// line logs msg with the blocks and bytes done of the total and the time left at the rate so far.
func (p *logProgress) line(msg string, kv ...any) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	eta := "unknown"
	if elapsed := p.now().Sub(p.start); p.doneBytes > 0 && elapsed > 0 {
		left := time.Duration(float64(elapsed) * float64(p.totalBytes-p.doneBytes) / float64(p.doneBytes))
		eta = left.Round(time.Second).String()
	}
	level.Info(p.logger).Log(append([]any{"msg", msg}, append(kv, "blocks_done", p.doneBlocks, "blocks_total", p.totalBlocks,
		"bytes_done", p.doneBytes, "bytes_total", p.totalBytes, "eta", eta)...)...)
}

// barProgress draws a bar of the bytes copied, with the blocks done as its description and the time left.
type barProgress struct {
	logger   log.Logger
	w        io.Writer
	throttle time.Duration

	counts
	bar *progressbar.ProgressBar
}

func newBarProgress(logger log.Logger, w io.Writer, throttle time.Duration) *barProgress {
	return &barProgress{logger: logger, w: w, throttle: throttle}
}

func (p *barProgress) Start(blocks int, bytes int64) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	p.totalBlocks, p.totalBytes = blocks, bytes
	if bytes <= 0 {
		return // Nothing to copy: no bar.
	}
	p.bar = progressbar.NewOptions64(bytes,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(p.description()),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(p.throttle),
		progressbar.OptionSetRenderBlankState(true),
	)
}

// description is "blocks <done>/<total>"; p.mtx is held.
func (p *barProgress) description() string {
	return fmt.Sprintf("blocks %d/%d", p.doneBlocks, p.totalBlocks)
}

func (p *barProgress) Copied(n int64) {
	p.mtx.Lock()
	p.doneBytes += n
	bar := p.bar
	p.mtx.Unlock()
	if bar != nil {
		_ = bar.Add64(n)
	}
}

func (p *barProgress) BlockDone(id ulid.ULID) {
	p.mtx.Lock()
	p.doneBlocks++
	desc, bar := p.description(), p.bar
	p.mtx.Unlock()
	if bar != nil {
		bar.Describe(desc)
	}
	level.Debug(p.logger).Log("msg", "imported block", "block", id)
}

func (p *barProgress) Finish(err error) {
	p.mtx.Lock()
	bar := p.bar
	p.mtx.Unlock()
	// The bar is full once the bytes are read, maybe before the last block is verified and done; it ends its
	// line only here, so that the last "blocks n/n" redraws it in place.
	if bar != nil {
		if err == nil {
			_ = bar.Finish()
		} else {
			_ = bar.Exit()
		}
		_, _ = fmt.Fprintln(p.w)
	}
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if err == nil {
		level.Info(p.logger).Log("msg", "import done", "blocks_done", p.doneBlocks, "blocks_total", p.totalBlocks,
			"bytes_done", p.doneBytes, "bytes_total", p.totalBytes)
	}
}
