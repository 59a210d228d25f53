package indexheader

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/index"
)

const testIndexPath = "t1/01HZZZZZZZZZZZZZZZZZZZZZZZ/index"

func manyNamesSeries() []labels.Labels {
	var series []labels.Labels
	for i := 0; i < 300; i++ {
		b := labels.NewScratchBuilder(0)
		b.Add(model.MetricNameLabel, fmt.Sprintf("metric_%d", i%7))
		for n := 0; n < 40; n++ {
			if (i+n)%3 == 0 {
				b.Add(fmt.Sprintf("label_%02d", n), fmt.Sprintf("value_%d", (i*n)%23))
			}
		}
		b.Add("series", fmt.Sprint(i))
		b.Sort()
		series = append(series, b.Labels())
	}
	return series
}

func unicodeSeries() []labels.Labels {
	values := []string{"ä", "ö", "ü", "日本語", "😀", "a b", "a\nb", "\x00", "ab", "abc", "ab\xff", strings.Repeat("long", 500), "zß", "Ω"}
	var series []labels.Labels
	for i, v := range values {
		series = append(series, labels.FromStrings(model.MetricNameLabel, "unicode", "v", v, "ünï©ødé", fmt.Sprint(i%3)))
	}
	return series
}

func highCardinalitySeries(n int) []labels.Labels {
	series := make([]labels.Labels, 0, n)
	for i := 0; i < n; i++ {
		series = append(series, labels.FromStrings(model.MetricNameLabel, "requests_total", "id", fmt.Sprintf("%08x", i*7919), "pod", fmt.Sprintf("pod-%d", i%13)))
	}
	return series
}

func TestBuildOpenMatchesPrometheusReader(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(t testing.TB, dir string) string
	}{
		{name: "no series", write: func(t testing.TB, dir string) string { return writeIndex(t, dir, nil) }},
		{name: "one series", write: func(t testing.TB, dir string) string {
			return writeBlock(t, dir, []labels.Labels{labels.FromStrings(model.MetricNameLabel, "up")})
		}},
		{name: "index writer, few series", write: func(t testing.TB, dir string) string {
			return writeIndex(t, dir, []labels.Labels{
				labels.FromStrings("a", "1"), labels.FromStrings("a", "2", "b", "x"), labels.FromStrings("c", "z"),
			})
		}},
		{name: "many label names and values", write: func(t testing.TB, dir string) string { return writeBlock(t, dir, manyNamesSeries()) }},
		{name: "unicode values", write: func(t testing.TB, dir string) string { return writeBlock(t, dir, unicodeSeries()) }},
		{name: "label with thousands of values", write: func(t testing.TB, dir string) string {
			return writeBlock(t, dir, highCardinalitySeries(5000))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			local := tc.write(t, t.TempDir())
			bkt := newBucket(t, local, testIndexPath)

			headerPath := filepath.Join(t.TempDir(), "sub", "dir", "index-header")
			testutil.Ok(t, Build(ctx, bkt, testIndexPath, headerPath))
			r, err := Open(headerPath)
			testutil.Ok(t, err)
			defer func() { testutil.Ok(t, r.Close()) }()
			testutil.Assert(t, r.Size() > 0)

			ir, err := index.NewFileReader(local, index.DecodePostingsRaw)
			testutil.Ok(t, err)
			defer func() { testutil.Ok(t, ir.Close()) }()

			testutil.Equals(t, ir.Version(), r.IndexVersion())

			// Every symbol.
			it := ir.Symbols()
			var numSymbols uint32
			for ; it.Next(); numSymbols++ {
				s, err := r.LookupSymbol(ctx, numSymbols)
				testutil.Ok(t, err)
				testutil.Equals(t, it.At(), s, "symbol %d", numSymbols)
			}
			testutil.Ok(t, it.Err())
			_, err = r.LookupSymbol(ctx, numSymbols)
			testutil.NotOk(t, err)

			// Label names and values.
			wantNames, err := ir.LabelNames(ctx)
			testutil.Ok(t, err)
			gotNames := r.LabelNames()
			testutil.Equals(t, len(wantNames), len(gotNames))
			if len(wantNames) > 0 {
				testutil.Equals(t, wantNames, gotNames)
			}
			testutil.Assert(t, r.LabelValues("not-a-label") == nil)

			wantRanges, err := ir.PostingsRanges()
			testutil.Ok(t, err)
			checkPostings := func(name, value string) index.Range {
				t.Helper()
				rng, ok := r.PostingsRange(name, value)
				testutil.Assert(t, ok, "postings range of %q=%q", name, value)
				// Prometheus's ranges exclude the length prefix and the CRC32.
				want := wantRanges[labels.Label{Name: name, Value: value}]
				testutil.Equals(t, want.Start-4, rng.Start)
				testutil.Assert(t, rng.End >= want.End+4, "range %v of %q=%q cuts %v short", rng, name, value, want)

				p, n, err := DecodePostings(readRange(t, bkt, testIndexPath, rng))
				testutil.Ok(t, err)
				testutil.Equals(t, int(want.End+4-rng.Start), n)
				got, err := index.ExpandPostings(p)
				testutil.Ok(t, err)
				wp, err := ir.Postings(ctx, name, value)
				testutil.Ok(t, err)
				exp, err := index.ExpandPostings(wp)
				testutil.Ok(t, err)
				testutil.Equals(t, len(exp), len(got))
				if len(exp) > 0 {
					testutil.Equals(t, exp, got, "postings of %q=%q", name, value)
				}
				return rng
			}
			checkPostings("", "")
			numLists := 1
			for _, name := range wantNames {
				wantValues, err := ir.SortedLabelValues(ctx, name, nil)
				testutil.Ok(t, err)
				values := r.LabelValues(name)
				testutil.Equals(t, wantValues, values, "values of %q", name)

				var rngs []index.Range
				for _, v := range values {
					rngs = append(rngs, checkPostings(name, v))
					numLists++
				}
				gotValues, gotRngs := r.PostingsRanges(name, func(string) bool { return true })
				testutil.Equals(t, values, gotValues)
				testutil.Equals(t, rngs, gotRngs)

				// Every other value.
				var wantOdd []string
				var wantOddRngs []index.Range
				for i, v := range values {
					if i%2 == 1 {
						wantOdd = append(wantOdd, v)
						wantOddRngs = append(wantOddRngs, rngs[i])
					}
				}
				oddSet := map[string]bool{}
				for _, v := range wantOdd {
					oddSet[v] = true
				}
				gotOdd, gotOddRngs := r.PostingsRanges(name, func(v string) bool { return oddSet[v] })
				testutil.Equals(t, wantOdd, gotOdd)
				testutil.Equals(t, wantOddRngs, gotOddRngs)

				// Absent values: before, between and after the existing ones.
				for _, v := range []string{"", values[0] + "\x00", values[len(values)-1] + "~", "\xff\xff"} {
					if _, ok := r.PostingsRange(name, v); ok {
						testutil.Assert(t, contains(values, v), "found absent value %q of %q", v, name)
					}
				}
			}
			testutil.Equals(t, len(wantRanges), numLists)
			_, ok := r.PostingsRange("not-a-label", "x")
			testutil.Assert(t, !ok)
			values, rngs := r.PostingsRanges("not-a-label", func(string) bool { return true })
			testutil.Assert(t, values == nil && rngs == nil)
		})
	}
}

func contains(values []string, v string) bool {
	for _, x := range values {
		if x == v {
			return true
		}
	}
	return false
}

// TestLookupSymbolDecodesSeries decodes every series entry of the index with the header's symbols.
func TestLookupSymbolDecodesSeries(t *testing.T) {
	ctx := context.Background()
	local := writeBlock(t, t.TempDir(), manyNamesSeries())
	bkt := newBucket(t, local, testIndexPath)
	headerPath := filepath.Join(t.TempDir(), "index-header")
	testutil.Ok(t, Build(ctx, bkt, testIndexPath, headerPath))
	r, err := Open(headerPath)
	testutil.Ok(t, err)

	ir, err := index.NewFileReader(local, index.DecodePostingsRaw)
	testutil.Ok(t, err)
	defer func() { testutil.Ok(t, ir.Close()) }()
	raw, err := os.ReadFile(local)
	testutil.Ok(t, err)

	dec := &index.Decoder{LookupSymbol: r.LookupSymbol}
	p, err := ir.Postings(ctx, "", "")
	testutil.Ok(t, err)
	var (
		b, want labels.ScratchBuilder
		n       int
	)
	for p.Next() {
		ref := p.At()
		// Series entries start at ref*16 with a uvarint length.
		off := int(ref) * 16
		l, k := binary.Uvarint(raw[off:])
		testutil.Ok(t, dec.Series(raw[off+k:off+k+int(l)], &b, nil))
		testutil.Ok(t, ir.Series(ref, &want, nil))
		testutil.Equals(t, want.Labels().String(), b.Labels().String())
		n++
	}
	testutil.Ok(t, p.Err())
	testutil.Equals(t, 300, n)
}

func TestBuildReadsOnlyTOCSymbolsAndOffsetTable(t *testing.T) {
	ctx := context.Background()
	// Many series over few symbols: the series and postings sections dwarf the symbols and offset table.
	var series []labels.Labels
	for i := 0; i < 20000; i++ {
		b := labels.NewScratchBuilder(0)
		b.Add(model.MetricNameLabel, "m")
		for n := 0; n < 8; n++ {
			b.Add(fmt.Sprintf("l%d", n), fmt.Sprint((i>>(2*n))%4))
		}
		series = append(series, b.Labels())
	}
	local := writeIndex(t, t.TempDir(), series)
	fi, err := os.Stat(local)
	testutil.Ok(t, err)
	bkt := &countingBucket{BucketReader: newBucket(t, local, testIndexPath)}

	headerPath := filepath.Join(t.TempDir(), "index-header")
	testutil.Ok(t, Build(ctx, bkt, testIndexPath, headerPath))
	attributes, gets, getRanges, bytesRead := bkt.counts()
	testutil.Equals(t, 1, attributes)
	testutil.Equals(t, 0, gets)
	testutil.Equals(t, 4, getRanges)
	testutil.Assert(t, bytesRead*20 < fi.Size(), "read %d bytes of a %d bytes index", bytesRead, fi.Size())

	hfi, err := os.Stat(headerPath)
	testutil.Ok(t, err)
	testutil.Assert(t, hfi.Size() <= bytesRead+fixedHeaderLen, "header of %d bytes from %d bytes read", hfi.Size(), bytesRead)

	r, err := Open(headerPath)
	testutil.Ok(t, err)
	testutil.Equals(t, []string{"0", "1", "2", "3"}, r.LabelValues("l0"))
}

func TestBuildErrors(t *testing.T) {
	ctx := context.Background()
	local := writeIndex(t, t.TempDir(), []labels.Labels{labels.FromStrings("a", "b")})
	raw, err := os.ReadFile(local)
	testutil.Ok(t, err)

	for _, tc := range []struct {
		name  string
		index []byte
	}{
		{name: "tiny", index: raw[:10]},
		{name: "bad magic", index: append([]byte{0, 0, 0, 0}, raw[4:]...)},
		{name: "bad TOC", index: flipByte(raw, len(raw)-10)},
		{name: "bad symbols", index: flipByte(raw, 12)},
		{name: "truncated", index: raw[:len(raw)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "index")
			testutil.Ok(t, os.WriteFile(p, tc.index, 0o600))
			bkt := newBucket(t, p, testIndexPath)
			headerPath := filepath.Join(dir, "index-header")
			testutil.NotOk(t, Build(ctx, bkt, testIndexPath, headerPath))
			_, err := os.Stat(headerPath)
			testutil.Assert(t, os.IsNotExist(err), "header written for a bad index")
		})
	}
	t.Run("missing index", func(t *testing.T) {
		bkt := newBucket(t, local, testIndexPath)
		testutil.NotOk(t, Build(ctx, bkt, "t1/missing/index", filepath.Join(t.TempDir(), "index-header")))
	})
}

func flipByte(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}

func TestOpenRejectsCorruptedHeader(t *testing.T) {
	ctx := context.Background()
	local := writeBlock(t, t.TempDir(), manyNamesSeries())
	bkt := newBucket(t, local, testIndexPath)
	dir := t.TempDir()
	headerPath := filepath.Join(dir, "index-header")
	testutil.Ok(t, Build(ctx, bkt, testIndexPath, headerPath))
	good, err := os.ReadFile(headerPath)
	testutil.Ok(t, err)
	symLen := 4 + int(binary.BigEndian.Uint32(good[fixedHeaderLen:])) + 4

	for _, tc := range []struct {
		name    string
		content []byte
		errMsg  string
	}{
		{name: "empty", content: nil},
		{name: "shorter than header", content: good[:fixedHeaderLen-1]},
		{name: "header only", content: good[:fixedHeaderLen]},
		{name: "truncated in symbols", content: good[:fixedHeaderLen+symLen/2]},
		{name: "truncated in offset table", content: good[:fixedHeaderLen+symLen+10]},
		{name: "truncated by one byte", content: good[:len(good)-1]},
		{name: "trailing byte", content: append(append([]byte(nil), good...), 0)},
		{name: "bad magic", content: flipByte(good, 0)},
		{name: "other format version", content: func() []byte { c := append([]byte(nil), good...); c[4] = FormatVersion + 1; return c }(), errMsg: "format version"},
		{name: "bad header checksum", content: flipByte(good, 10)},
		{name: "corrupted symbol", content: flipByte(good, fixedHeaderLen+symLen/2)},
		{name: "corrupted symbols CRC", content: flipByte(good, fixedHeaderLen+symLen-1)},
		{name: "corrupted offset table", content: flipByte(good, fixedHeaderLen+symLen+(len(good)-fixedHeaderLen-symLen)/2)},
		{name: "corrupted offset table CRC", content: flipByte(good, len(good)-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "index-header")
			testutil.Ok(t, os.WriteFile(p, tc.content, 0o600))
			_, err := Open(p)
			testutil.NotOk(t, err)
			if tc.errMsg != "" {
				testutil.Assert(t, strings.Contains(err.Error(), tc.errMsg), "error %q lacks %q", err, tc.errMsg)
			}
		})
	}
	_, err = Open(filepath.Join(dir, "missing"))
	testutil.NotOk(t, err)
}

func TestDecodePostings(t *testing.T) {
	ctx := context.Background()
	local := writeBlock(t, t.TempDir(), highCardinalitySeries(100))
	bkt := newBucket(t, local, testIndexPath)
	headerPath := filepath.Join(t.TempDir(), "index-header")
	testutil.Ok(t, Build(ctx, bkt, testIndexPath, headerPath))
	r, err := Open(headerPath)
	testutil.Ok(t, err)
	rng, ok := r.PostingsRange("pod", "pod-1")
	testutil.Assert(t, ok)
	good := readRange(t, bkt, testIndexPath, rng)
	p, n, err := DecodePostings(good)
	testutil.Ok(t, err)
	refs, err := index.ExpandPostings(p)
	testutil.Ok(t, err)
	testutil.Equals(t, 8, len(refs)) // pod-1 holds series 1, 14, ..., 92.
	testutil.Equals(t, 4+4+8*4+4, n) // Length, count, entries, CRC32.

	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{name: "empty", b: nil},
		{name: "truncated", b: good[:n-1]},
		{name: "corrupted entry", b: flipByte(good, 6)},
		{name: "corrupted CRC", b: flipByte(good, n-1)},
		{name: "length not a multiple of 4", b: func() []byte {
			c := append([]byte(nil), good...)
			binary.BigEndian.PutUint32(c, uint32(n-8-1))
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodePostings(tc.b)
			testutil.NotOk(t, err)
		})
	}
}
