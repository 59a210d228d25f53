package block

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
)

// A terminal gets the bar, anything else (a file, a pipe) the log lines; a regular file is not taken for a terminal.
func TestNewImportProgress_Choice(t *testing.T) {
	for _, tc := range []struct {
		terminal bool
		wantBar  bool
	}{{terminal: true, wantBar: true}, {terminal: false, wantBar: false}} {
		p := NewImportProgress(log.NewNopLogger(), &bytes.Buffer{}, tc.terminal, time.Second, nil)
		_, isBar := p.(*barProgress)
		_, isLog := p.(*logProgress)
		testutil.Equals(t, tc.wantBar, isBar, "terminal=%v: %T", tc.terminal, p)
		testutil.Equals(t, !tc.wantBar, isLog, "terminal=%v: %T", tc.terminal, p)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	testutil.Ok(t, err)
	defer f.Close()
	_, isLog := NewImportProgressFor(log.NewNopLogger(), f, time.Second).(*logProgress)
	testutil.Assert(t, isLog, "a regular file was taken for a terminal")
}

// The bar shows the bytes copied of the total, the blocks done and the time left, updated as the copy advances.
func TestBarProgress_Updates(t *testing.T) {
	var buf bytes.Buffer
	p := newBarProgress(log.NewNopLogger(), &buf, 0)
	p.Start(2, 2000)
	testutil.Assert(t, strings.Contains(buf.String(), "blocks 0/2") && strings.Contains(buf.String(), "0 B/2.0 kB"), "blank bar: %q", buf.String())

	steps := []struct {
		copied    int64
		blockDone bool
		want      []string
	}{
		{copied: 500, want: []string{"blocks 0/2", "25%", "500 B/2.0 kB"}},
		{copied: 500, blockDone: true, want: []string{"blocks 1/2", "50%", "1.0/2.0 kB"}},
		// Every byte read, the last block not yet verified: full bar, one block to go.
		{copied: 1000, want: []string{"blocks 1/2", "100%", "2.0/2.0 kB"}},
		{blockDone: true, want: []string{"blocks 2/2", "100%", "2.0/2.0 kB"}},
	}
	eta := regexp.MustCompile(`\[\d+s:\d+s\]`) // [elapsed:left]
	elapsed := regexp.MustCompile(`\[\d+s\]$`) // done: [elapsed]
	for i, s := range steps {
		buf.Reset()
		p.Copied(s.copied)
		if s.blockDone {
			p.BlockDone(ulid.MustNew(uint64(i), nil))
		}
		// The bar redraws its line: the last drawing is after the last carriage return.
		out := buf.String()
		last := out[strings.LastIndex(strings.TrimRight(out, "\n"), "\r")+1:]
		for _, w := range s.want {
			testutil.Assert(t, strings.Contains(last, w), "step %d: bar %q lacks %q", i, last, w)
		}
		testutil.Assert(t, !strings.Contains(out, "\n"), "step %d: the bar left its line: %q", i, out)
		if i < 2 {
			testutil.Assert(t, eta.MatchString(last), "step %d: bar %q has no [elapsed:left]", i, last)
		} else {
			testutil.Assert(t, elapsed.MatchString(last), "step %d: bar %q has no [elapsed]", i, last)
		}
	}
	buf.Reset()
	p.Finish(nil)
	testutil.Assert(t, !strings.Contains(buf.String(), "blocks 1/2") && strings.HasSuffix(buf.String(), "\n"), "finish: %q", buf.String())
}

// Nothing to copy: no bar is drawn, and nothing fails.
func TestBarProgress_NothingToCopy(t *testing.T) {
	var buf bytes.Buffer
	p := newBarProgress(log.NewNopLogger(), &buf, 0)
	p.Start(0, 0)
	p.Finish(nil)
	testutil.Equals(t, "", buf.String())
}

// Off a terminal: one line per block copied, with the counts and the time left at the rate so far (from the
// injected clock), and a last line when done; none when the import failed.
func TestLogProgress_Lines(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	p := NewImportProgress(log.NewLogfmtLogger(&buf), nil, false, 0, func() time.Time { return now })
	p.Start(4, 1000)
	now = now.Add(10 * time.Second)
	p.Copied(250)
	id := ulid.MustNew(1, nil)
	p.BlockDone(id)
	testutil.Equals(t, `level=info msg="imported block" block=`+id.String()+" blocks_done=1 blocks_total=4 bytes_done=250 bytes_total=1000 eta=30s\n", buf.String())

	buf.Reset()
	p.Finish(context.Canceled)
	testutil.Equals(t, "", buf.String())
	p.Finish(nil)
	testutil.Equals(t, "level=info msg=\"import done\" blocks_done=1 blocks_total=4 bytes_done=250 bytes_total=1000 eta=30s\n", buf.String())
}

// With an interval, progress lines come without a block being done, until Finish.
func TestLogProgress_Periodic(t *testing.T) {
	var buf syncBuf
	p := NewImportProgress(log.NewLogfmtLogger(&buf), nil, false, 5*time.Millisecond, nil)
	p.Start(1, 100)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), `msg="import progress"`) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	p.Finish(nil)
	testutil.Assert(t, strings.Contains(buf.String(), `msg="import progress" blocks_done=0 blocks_total=1`), "log: %q", buf.String())
	n := strings.Count(buf.String(), "\n")
	time.Sleep(20 * time.Millisecond)
	testutil.Equals(t, n, strings.Count(buf.String(), "\n"), "lines after Finish")
}

// syncBuf is a buffer a logging goroutine writes while the test reads.
type syncBuf struct {
	mtx sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.buf.String()
}
