package receive

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/klauspost/compress/snappy"
	"google.golang.org/protobuf/encoding/protowire"
)

// repeat returns unit repeated until the result is about n bytes.
func repeat(unit []byte, n int) []byte { return bytes.Repeat(unit, max(1, n/len(unit))) }

// hostileBody is one adversarial remote write body, decompressed.
type hostileBody struct {
	name    string
	ct      string
	body    []byte
	raw     bool // send body as is (already the HTTP body), not snappy-compressed
	want    int
	wantMsg []string
}

// hostileBodies are bodies that cost (or cost before the fix) far more to decode than their size: each is
// about size bytes decompressed and a few KiB compressed.
func hostileBodies(size int) []hostileBody {
	upLabel := pb(nil).bytes(1, label("__name__", "up"))
	series := func(entries []byte) []byte { return pb(nil).bytes(1, append(append(pb(nil), upLabel...), entries...)) }
	symbols := pb(nil).str(4, "").str(4, "__name__").str(4, "up").str(4, "a").str(4, "b")
	seriesV2 := func(refs []uint64, entries []byte) []byte {
		return append(append(pb(nil), symbols...), pb(nil).bytes(5, append(pb(nil).packedVarints(1, refs...), entries...))...)
	}
	manyRefs := []uint64{1, 2}
	for len(manyRefs) < size {
		manyRefs = append(manyRefs, 3, 4) // a="b", again and again
	}
	tooExpensive := []string{"refused before decoding"}
	dupUnit := pb(nil).bytes(1, label("a", "b")) // 8 bytes
	dupes := repeat(dupUnit, size)
	nDupes := len(dupes) / len(dupUnit)
	tooManyLabels := func(n int) []string {
		return []string{fmt.Sprintf("(actual: %d, limit: 30)", n), "err-mimir-max-label-names-per-series", `__name__="up"`}
	}
	return []hostileBody{
		{name: "1.0: empty series (0a 00)", ct: ctV1, body: repeat([]byte{0x0a, 0x00}, size), want: 400, wantMsg: tooExpensive},
		{name: "2.0: empty series (2a 00)", ct: ctV2, body: repeat([]byte{0x2a, 0x00}, size), want: 400, wantMsg: tooExpensive},
		{name: "1.0: series of an empty label", ct: ctV1, body: repeat([]byte{0x0a, 0x02, 0x0a, 0x00}, size), want: 400, wantMsg: tooExpensive},
		{name: "1.0: one series, huge label count", ct: ctV1, want: 400, wantMsg: tooManyLabels(nDupes + 1), body: series(dupes)},
		{name: "1.0: one series, huge label count, metric name last", ct: ctV1, want: 400, wantMsg: tooManyLabels(nDupes + 1),
			body: pb(nil).bytes(1, append(append(pb(nil), dupes...), upLabel...))},
		{name: "1.0: one series, huge label count, half of them empty", ct: ctV1, want: 400, wantMsg: tooManyLabels(nDupes/2 + 1),
			body: series(append(bytes.Repeat(pb(nil).bytes(1, label("e", "")), nDupes/2), dupes[:nDupes/2*len(dupUnit)]...))},
		{name: "2.0: one series, huge label count", ct: ctV2, want: 400, wantMsg: tooManyLabels(size / 4), body: seriesV2(manyRefs[:size/2], nil)},
		{name: "2.0: one series, huge label count, metric name last", ct: ctV2, want: 400, wantMsg: tooManyLabels(size / 4),
			body: seriesV2(append(append([]uint64(nil), manyRefs[2:size/2]...), 1, 2), nil)},
		{name: "2.0: huge symbol table", ct: ctV2, body: repeat([]byte{0x22, 0x00}, size), want: 400, wantMsg: tooExpensive},
		{name: "1.0: empty samples", ct: ctV1, body: series(repeat([]byte{0x12, 0x00}, size)), want: 400, wantMsg: tooExpensive},
		{name: "2.0: empty samples", ct: ctV2, body: seriesV2([]uint64{1, 2}, repeat([]byte{0x12, 0x00}, size)), want: 400, wantMsg: tooExpensive},
		{name: "1.0: empty histograms", ct: ctV1, body: series(repeat([]byte{0x22, 0x00}, size)), want: 400, wantMsg: tooExpensive},
		{name: "2.0: empty histograms", ct: ctV2, body: seriesV2([]uint64{1, 2}, repeat([]byte{0x1a, 0x00}, size)), want: 400, wantMsg: tooExpensive},
		{name: "1.0: empty exemplars", ct: ctV1, body: series(repeat([]byte{0x1a, 0x00}, size)), want: 400, wantMsg: tooExpensive},
		{name: "2.0: empty exemplars", ct: ctV2, body: seriesV2([]uint64{1, 2}, repeat([]byte{0x22, 0x00}, size)), want: 400, wantMsg: tooExpensive},
		{name: "1.0: histogram of empty spans", ct: ctV1, want: 400, wantMsg: tooExpensive,
			body: series(pb(nil).bytes(4, repeat(pb(nil).tag(11, protowire.BytesType).tag(0, 0)[:2], size)))},
		{name: "2.0: histogram of empty spans", ct: ctV2, want: 400, wantMsg: tooExpensive,
			body: seriesV2([]uint64{1, 2}, pb(nil).bytes(3, repeat([]byte{0x5a, 0x00}, size)))},
		{name: "1.0: exemplar of empty labels", ct: ctV1, want: 400, wantMsg: tooExpensive,
			body: series(pb(nil).bytes(3, repeat([]byte{0x0a, 0x00}, size)))},
		{name: "decompression bomb", ct: ctV1, raw: true, body: snappy.Encode(nil, make([]byte, 11<<20)), want: 413, wantMsg: []string{"max_recv_msg_size"}},
	}
}

// TestDecodeHostileBodies sends each hostile body through the handler: it gets its 4xx, and what the request
// allocated in all (runtime.MemStats.TotalAlloc, an upper bound of its heap growth) stays under 10× the
// decompressed body + 1 MiB. Before bodies were counted first, the 1 MiB bodies here took 30-300 MiB each.
func TestDecodeHostileBodies(t *testing.T) {
	const size = 1 << 20
	for _, tc := range hostileBodies(size) {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, testLimits())
			body := tc.body
			if !tc.raw {
				body = snappy.Encode(nil, tc.body)
			}
			decoded := len(tc.body)
			if tc.raw {
				decoded = 0
			}
			ceiling := uint64(10*max(decoded, len(body)) + 1<<20)

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			rec := env.do(t, body, tc.ct)
			runtime.ReadMemStats(&after)

			testutil.Equals(t, tc.want, rec.Code, rec.Body.String())
			for _, msg := range tc.wantMsg {
				testutil.Assert(t, strings.Contains(rec.Body.String(), msg), "answer %q does not contain %q", rec.Body.String(), msg)
			}
			testutil.Equals(t, 0, env.pusher.calls())
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d bytes decompressed (%d sent): %d bytes allocated (ceiling %d)", decoded, len(body), allocated, ceiling)
			testutil.Assert(t, allocated <= ceiling, "handling the request allocated %d bytes, more than 10× the %d-byte body + 1 MiB", allocated, decoded)
		})
	}
}
