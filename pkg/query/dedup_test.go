package query

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
)

// dedupF is a float test sample. In most cases the value names the replica it comes from.
type dedupF struct {
	t int64
	f float64
}

func (s dedupF) T() int64                      { return s.t }
func (s dedupF) ST() int64                     { return 0 }
func (s dedupF) F() float64                    { return s.f }
func (s dedupF) H() *histogram.Histogram       { return nil }
func (s dedupF) FH() *histogram.FloatHistogram { return nil }
func (s dedupF) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s dedupF) Copy() chunks.Sample           { return s }

// dedupS is a test sample of any type, with a start timestamp: a histogram when h is set, a float histogram
// when fh is set, a float otherwise.
type dedupS struct {
	t, st int64
	f     float64
	h     *histogram.Histogram
	fh    *histogram.FloatHistogram
}

func (s dedupS) T() int64                      { return s.t }
func (s dedupS) ST() int64                     { return s.st }
func (s dedupS) F() float64                    { return s.f }
func (s dedupS) H() *histogram.Histogram       { return s.h }
func (s dedupS) FH() *histogram.FloatHistogram { return s.fh }
func (s dedupS) Copy() chunks.Sample           { return s }
func (s dedupS) Type() chunkenc.ValueType {
	switch {
	case s.h != nil:
		return chunkenc.ValHistogram
	case s.fh != nil:
		return chunkenc.ValFloatHistogram
	default:
		return chunkenc.ValFloat
	}
}

func dedupListIter[S chunks.Sample](samples []S) chunkenc.Iterator {
	l := make(chunks.SampleSlice, len(samples))
	for i, s := range samples {
		l[i] = s
	}
	return storage.NewListSeriesIterator(l)
}

// dedupFloatIters returns an iterator for each replica that fails the test if it is used after being exhausted.
func dedupFloatIters(t testing.TB, replicas ...[]dedupF) []chunkenc.Iterator {
	its := make([]chunkenc.Iterator, len(replicas))
	for i, r := range replicas {
		its[i] = &dedupStrictIterator{Iterator: dedupListIter(r), t: t}
	}
	return its
}

type dedupStrictIterator struct {
	chunkenc.Iterator
	t    testing.TB
	done bool
}

func (it *dedupStrictIterator) Next() chunkenc.ValueType {
	if it.done {
		it.t.Error("Next called on an exhausted replica")
		return chunkenc.ValNone
	}
	typ := it.Iterator.Next()
	it.done = typ == chunkenc.ValNone
	return typ
}

func (it *dedupStrictIterator) Seek(t int64) chunkenc.ValueType {
	if it.done {
		it.t.Error("Seek called on an exhausted replica")
		return chunkenc.ValNone
	}
	typ := it.Iterator.Seek(t)
	it.done = typ == chunkenc.ValNone
	return typ
}

func (it *dedupStrictIterator) AtT() int64 {
	if it.done {
		it.t.Error("AtT called on an exhausted replica")
	}
	return it.Iterator.AtT()
}

// dedupSeries builds n float samples start, start+step, ... with value v, leaving out the timestamps in skip.
func dedupSeries(start, step int64, n int, v float64, skip ...int64) []dedupF {
	out := make([]dedupF, 0, n)
	for i := range n {
		t := start + int64(i)*step
		skipped := false
		for _, s := range skip {
			skipped = skipped || s == t
		}
		if !skipped {
			out = append(out, dedupF{t, v})
		}
	}
	return out
}

func expandDedupFloats(t testing.TB, it chunkenc.Iterator) []dedupF {
	t.Helper()
	var out []dedupF
	prev := int64(-1 << 63)
	for {
		typ := it.Next()
		if typ == chunkenc.ValNone {
			break
		}
		testutil.Equals(t, chunkenc.ValFloat, typ)
		ts, v := it.At()
		testutil.Equals(t, ts, it.AtT(), "AtT and At disagree")
		testutil.Assert(t, ts > prev, "timestamps not strictly increasing: %d after %d", ts, prev)
		prev = ts
		out = append(out, dedupF{ts, v})
	}
	testutil.Ok(t, it.Err())
	return out
}

func expandDedupAny(t testing.TB, it chunkenc.Iterator) []dedupS {
	t.Helper()
	var out []dedupS
	for {
		typ := it.Next()
		if typ == chunkenc.ValNone {
			break
		}
		s := dedupS{t: it.AtT(), st: it.AtST()}
		switch typ {
		case chunkenc.ValFloat:
			var ts int64
			ts, s.f = it.At()
			testutil.Equals(t, s.t, ts)
		case chunkenc.ValHistogram:
			var ts int64
			ts, s.h = it.AtHistogram(nil)
			testutil.Equals(t, s.t, ts)
		case chunkenc.ValFloatHistogram:
			var ts int64
			ts, s.fh = it.AtFloatHistogram(nil)
			testutil.Equals(t, s.t, ts)
		default:
			t.Fatalf("unexpected value type %v", typ)
		}
		out = append(out, s)
	}
	testutil.Ok(t, it.Err())
	return out
}

// Real scrapes of one counter by two Prometheus replicas, around a restart of both (from Thanos's regression
// test for https://github.com/thanos-io/thanos/issues/2401), without counter adjustment.
var (
	dedupRealA = []dedupF{
		{1587692345791, 495875}, {1587692360801, 496082}, {1587692375791, 496196}, {1587692390791, 496245},
		{1587692405791, 496295}, {1587692420791, 496365}, {1587692435791, 496401}, {1587692450791, 496452},
		{1587692465791, 496491}, {1587692480791, 496544}, {1587692555791, 496619}, {1587692570791, 496852},
		{1587692585791, 497052}, {1587692600791, 497245}, {1587692615791, 497529}, {1587692630791, 497697},
		{1587692645791, 497909}, {1587692660791, 498156},
	}
	dedupRealB = []dedupF{
		{1587692347139, 495901}, {1587692362139, 496107}, {1587692377139, 496196}, {1587692392139, 496245},
		{1587692407139, 496300}, {1587692422159, 496365}, {1587692437139, 496401}, {1587692452139, 496452},
		{1587692467139, 496532}, {1587692542149, 496537}, {1587692557139, 496633}, {1587692572139, 496844},
		{1587692587139, 497040}, {1587692602144, 497257}, {1587692617139, 497522}, {1587692632139, 497710},
		{1587692647139, 497938}, {1587692662154, 498172},
	}
)

func TestDedupIterator_Penalty(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas [][]dedupF
		exp      []dedupF
	}{
		{
			name:     "identical replicas give one copy",
			replicas: [][]dedupF{dedupSeries(0, 15000, 20, 7), dedupSeries(0, 15000, 20, 7)},
			exp:      dedupSeries(0, 15000, 20, 7),
		},
		{
			name: "same timestamps: the first replica wins",
			replicas: [][]dedupF{
				{{10000, 10}, {20000, 11}, {30000, 12}, {40000, 13}},
				{{10000, 20}, {20000, 21}, {30000, 22}, {40000, 23}},
			},
			exp: []dedupF{{10000, 10}, {20000, 11}, {30000, 12}, {40000, 13}},
		},
		{
			name: "the replica starting earlier wins",
			replicas: [][]dedupF{
				{{10100, 1}, {20100, 1}, {30100, 1}, {40100, 1}},
				{{10000, 2}, {20000, 2}, {30000, 2}, {40000, 2}},
			},
			exp: []dedupF{{10000, 2}, {20000, 2}, {30000, 2}, {40000, 2}},
		},
		{
			name: "a gap of one interval does not switch",
			replicas: [][]dedupF{
				{{10000, 1}, {20000, 1}, {40000, 1}},
				{{10000, 2}, {20000, 2}, {30000, 2}, {40000, 2}},
			},
			exp: []dedupF{{10000, 1}, {20000, 1}, {40000, 1}},
		},
		{
			name: "a gap of one interval does not switch to a shifted replica",
			replicas: [][]dedupF{
				{{10000, 1}, {20000, 1}, {40000, 1}},
				{{15000, 2}, {25000, 2}, {35000, 2}, {45000, 2}},
			},
			exp: []dedupF{{10000, 1}, {20000, 1}, {40000, 1}},
		},
		{
			name: "a gap longer than two intervals switches, and the new replica is kept",
			replicas: [][]dedupF{
				{{10000, 1}, {20000, 1}, {30000, 1}, {60000, 1}, {70000, 1}},
				{{10100, 2}, {20100, 2}, {30100, 2}, {40100, 2}, {50100, 2}, {60100, 2}},
			},
			// 40100 is within the penalty (2×10s after 30000); 70000 of the first replica is beyond the end of
			// the second but was skipped by the penalty of 2×20100 it got at the switch.
			exp: []dedupF{{10000, 1}, {20000, 1}, {30000, 1}, {50100, 2}, {60100, 2}},
		},
		{
			name: "initial penalty: a sample 5000 ms after the first one is skipped",
			replicas: [][]dedupF{
				{{10000, 1}, {20000, 1}, {30000, 1}},
				{{15000, 2}, {25000, 2}, {35000, 2}},
			},
			exp: []dedupF{{10000, 1}, {20000, 1}, {30000, 1}},
		},
		{
			name: "initial penalty: a sample 5001 ms after the first one is taken",
			replicas: [][]dedupF{
				{{10000, 1}, {20000, 1}, {30000, 1}},
				{{15001, 2}, {25001, 2}, {35001, 2}},
			},
			exp: []dedupF{{10000, 1}, {15001, 2}, {25001, 2}, {35001, 2}},
		},
		{
			name: "penalty boundary: a sample exactly two intervals after the last one is skipped",
			replicas: [][]dedupF{
				{{10000, 1}, {20000, 1}, {30000, 1}, {70000, 1}},
				{{10000, 2}, {50000, 2}, {50001, 2}, {60000, 2}},
			},
			exp: []dedupF{{10000, 1}, {20000, 1}, {30000, 1}, {50001, 2}, {60000, 2}},
		},
		{
			name: "regression data without counter adjustment",
			replicas: [][]dedupF{
				{{10000, 8}, {20000, 9}, {50001, 10}, {60000, 11}, {70000, 12}, {80000, 13}, {90000, 14}, {100000, 15}},
				{{10001, 8}, {45001, 8.5}, {55001, 9.5}, {65001, 10.5}},
			},
			// The switch at 45001 gives the first replica a penalty of 2×25001, which moves it to 100000. (Thanos's
			// own test expects 90000 as well, because its mock iterator's Seek can move backwards; with iterators
			// that honour the Seek contract Thanos's iterator gives this output too.)
			exp: []dedupF{{10000, 8}, {20000, 9}, {45001, 8.5}, {55001, 9.5}, {65001, 10.5}, {100000, 15}},
		},
		{
			name:     "real scrapes of two replicas around a restart",
			replicas: [][]dedupF{dedupRealA, dedupRealB},
			exp:      append(append([]dedupF{}, dedupRealA[:10]...), dedupRealB[9:]...),
		},
		{
			name: "gap in the first replica: switch once the penalty has passed",
			replicas: [][]dedupF{
				dedupSeries(0, 15000, 21, 1, 60000, 75000, 90000, 105000, 120000),
				dedupSeries(0, 15000, 21, 2),
			},
			// The second replica's 60000 and 75000 fall within 2×15s of 45000.
			exp: append(dedupSeries(0, 15000, 4, 1), dedupSeries(90000, 15000, 15, 2)...),
		},
		{
			name: "gaps in both replicas at different places",
			replicas: [][]dedupF{
				dedupSeries(10000, 10000, 20, 1, 40000, 50000, 60000),
				dedupSeries(10000, 10000, 20, 2, 70000, 80000, 90000),
			},
			// After the switch at 60000 the first replica must skip 2×30s, past the second replica's gap.
			exp: append(dedupSeries(10000, 10000, 3, 1), append(
				[]dedupF{{60000, 2}},
				dedupSeries(100000, 10000, 11, 2)...)...),
		},
		{
			name: "shifted scrapes: one replica only, until it has a gap",
			replicas: [][]dedupF{
				dedupSeries(0, 15000, 21, 1, 120000, 135000, 150000),
				dedupSeries(5000, 15000, 21, 2),
			},
			exp: append(dedupSeries(0, 15000, 8, 1), dedupSeries(140000, 15000, 12, 2)...),
		},
		{
			name: "three replicas",
			replicas: [][]dedupF{
				dedupSeries(10000, 10000, 5, 1),
				dedupSeries(12000, 10000, 10, 2),
				dedupSeries(14000, 10000, 15, 3),
			},
			exp: append(dedupSeries(10000, 10000, 5, 1), append(
				dedupSeries(72000, 10000, 4, 2),
				dedupSeries(124000, 10000, 4, 3)...)...),
		},
		{
			name: "four replicas in disjoint ranges",
			replicas: [][]dedupF{
				{{10000, 1}, {20000, 2}},
				{{60000, 3}, {70000, 4}},
				{{200000, 5}, {210000, 6}},
				{{10000, 1}, {20000, 2}},
			},
			exp: []dedupF{{10000, 1}, {20000, 2}, {60000, 3}, {70000, 4}, {200000, 5}, {210000, 6}},
		},
		{
			name:     "one replica empty",
			replicas: [][]dedupF{nil, dedupSeries(0, 15000, 5, 2)},
			exp:      dedupSeries(0, 15000, 5, 2),
		},
		{
			name:     "all replicas empty",
			replicas: [][]dedupF{nil, nil, nil},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := expandDedupFloats(t, newDedupIterator(dedupFloatIters(t, tc.replicas...)))
			testutil.Equals(t, tc.exp, got)
			testutil.Equals(t, tc.exp, dedupOracle(tc.replicas...), "the test oracle disagrees with the expectation")
		})
	}
}

func TestDedupIterator_ZeroAndOneReplica(t *testing.T) {
	it := newDedupIterator(nil)
	testutil.Equals(t, chunkenc.ValNone, it.Next())
	testutil.Equals(t, chunkenc.ValNone, it.Seek(0))
	testutil.Ok(t, it.Err())

	one := dedupListIter(dedupSeries(0, 1000, 3, 1))
	testutil.Assert(t, newDedupIterator([]chunkenc.Iterator{one}) == one, "a single replica must be returned as is")
}

type dedupSeekOp struct {
	seek    bool
	t       int64
	expType chunkenc.ValueType
	expT    int64
	expV    float64
}

func TestDedupIterator_Seek(t *testing.T) {
	// The first replica has a gap from 105000 to 165000; the second is shifted by 5s.
	replicas := func(t *testing.T) []chunkenc.Iterator {
		return dedupFloatIters(t,
			dedupSeries(0, 15000, 21, 1, 120000, 135000, 150000),
			dedupSeries(5000, 15000, 21, 2),
		)
	}
	next := func(expT int64, expV float64) dedupSeekOp {
		return dedupSeekOp{expType: chunkenc.ValFloat, expT: expT, expV: expV}
	}
	seek := func(t, expT int64, expV float64) dedupSeekOp {
		return dedupSeekOp{seek: true, t: t, expType: chunkenc.ValFloat, expT: expT, expV: expV}
	}
	for _, tc := range []struct {
		name string
		ops  []dedupSeekOp
	}{
		{name: "seek on a fresh iterator before the first sample", ops: []dedupSeekOp{seek(-1000, 0, 1), next(15000, 1)}},
		{name: "seek on a fresh iterator into the middle", ops: []dedupSeekOp{seek(100000, 105000, 1), next(140000, 2)}},
		{name: "seek to an exact timestamp", ops: []dedupSeekOp{seek(45000, 45000, 1), next(60000, 1)}},
		{
			// Seeking the replicas directly would find the second replica's 125000, which the penalty skips.
			name: "seek into a gap honours the penalty",
			ops:  []dedupSeekOp{next(0, 1), seek(110000, 140000, 2), next(155000, 2)},
		},
		{
			name: "seek backwards or to the current sample does not move",
			ops: []dedupSeekOp{
				seek(140000, 140000, 2), seek(50000, 140000, 2), seek(140000, 140000, 2),
				next(155000, 2), seek(-1, 155000, 2), next(170000, 2),
			},
		},
		{
			name: "seek forward after next",
			ops:  []dedupSeekOp{next(0, 1), next(15000, 1), seek(200000, 200000, 2), next(215000, 2)},
		},
		{
			name: "seek past the end, then everything is exhausted",
			ops: []dedupSeekOp{
				next(0, 1), {seek: true, t: 1 << 40}, {seek: true, t: 0}, {}, {seek: true, t: 1 << 40},
			},
		},
		{name: "seek to the last sample", ops: []dedupSeekOp{seek(305000, 305000, 2), {}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := newDedupIterator(replicas(t))
			for i, op := range tc.ops {
				var typ chunkenc.ValueType
				if op.seek {
					typ = it.Seek(op.t)
				} else {
					typ = it.Next()
				}
				testutil.Equals(t, op.expType, typ, "op %d", i)
				if typ == chunkenc.ValNone {
					continue
				}
				ts, v := it.At()
				testutil.Equals(t, dedupF{op.expT, op.expV}, dedupF{ts, v}, "op %d", i)
				testutil.Equals(t, op.expT, it.AtT(), "op %d", i)
			}
			testutil.Ok(t, it.Err())
		})
	}
}

func TestDedupIterator_Histograms(t *testing.T) {
	hs := tsdbutil.GenerateTestHistograms(10)
	fhs := tsdbutil.GenerateTestFloatHistograms(10)

	t.Run("histograms, float histograms and start timestamps", func(t *testing.T) {
		var a, b []dedupS
		for i, ts := range []int64{10000, 20000, 30000, 70000, 80000} {
			a = append(a, dedupS{t: ts, st: 1, h: hs[i]})
		}
		for i := range 9 {
			b = append(b, dedupS{t: int64(i)*10000 + 10500, st: 2, fh: fhs[i]})
		}
		// The same penalty rule as for floats: switch at the 40s gap, skip what falls within the penalty.
		exp := append(append([]dedupS{}, a[:3]...), b[4:]...)
		got := expandDedupAny(t, newDedupIterator([]chunkenc.Iterator{dedupListIter(a), dedupListIter(b)}))
		testutil.Equals(t, exp, got)
	})

	t.Run("floats mixed with histograms", func(t *testing.T) {
		floats := []dedupS{{t: 0, f: 0}}
		var hists []dedupS
		for i := range 4 {
			hists = append(hists, dedupS{t: int64(i+1) * 10000, h: hs[0]})
		}
		exp := append(append([]dedupS{}, floats...), hists...)
		for _, order := range [][2][]dedupS{{hists, floats}, {floats, hists}} {
			got := expandDedupAny(t, newDedupIterator([]chunkenc.Iterator{dedupListIter(order[0]), dedupListIter(order[1])}))
			testutil.Equals(t, exp, got)
		}
	})

	t.Run("a histogram replica and a float replica switching on gaps", func(t *testing.T) {
		var a, b []dedupS
		for i := range 6 {
			if i != 2 && i != 3 && i != 4 {
				a = append(a, dedupS{t: int64(i) * 15000, h: hs[i]})
			}
			b = append(b, dedupS{t: int64(i)*15000 + 1000, f: float64(i)})
		}
		// a: 0, 15000, 75000; b: 1000, 16000, 31000, 46000, 61000, 76000. After 15000 the float replica's
		// 31000 is within the penalty; 46000 comes first.
		exp := []dedupS{a[0], a[1], b[3], b[4], b[5]}
		got := expandDedupAny(t, newDedupIterator([]chunkenc.Iterator{dedupListIter(a), dedupListIter(b)}))
		testutil.Equals(t, exp, got)
	})
}

// dedupErrIterator fails when it would move to a sample at or after failAt.
type dedupErrIterator struct {
	chunkenc.Iterator
	failAt int64
	err    error
}

func (it *dedupErrIterator) check(typ chunkenc.ValueType) chunkenc.ValueType {
	if it.err != nil {
		return chunkenc.ValNone
	}
	if typ != chunkenc.ValNone && it.AtT() >= it.failAt {
		it.err = fmt.Errorf("replica failed at %d", it.failAt)
		return chunkenc.ValNone
	}
	return typ
}

func (it *dedupErrIterator) Next() chunkenc.ValueType {
	if it.err != nil {
		return chunkenc.ValNone
	}
	return it.check(it.Iterator.Next())
}

func (it *dedupErrIterator) Seek(t int64) chunkenc.ValueType {
	if it.err != nil {
		return chunkenc.ValNone
	}
	return it.check(it.Iterator.Seek(t))
}

func (it *dedupErrIterator) Err() error { return it.err }

func TestDedupIterator_Errors(t *testing.T) {
	series := func(v float64) []dedupF { return dedupSeries(10000, 10000, 6, v) }
	failing := func(v float64, failAt int64) chunkenc.Iterator {
		return &dedupErrIterator{Iterator: dedupListIter(series(v)), failAt: failAt}
	}
	for _, tc := range []struct {
		name     string
		replicas []chunkenc.Iterator
		exp      []dedupF
		expErr   string
	}{
		{
			name:     "first replica fails, the other continues",
			replicas: []chunkenc.Iterator{failing(1, 30000), dedupListIter(series(2))},
			// 30000 and 40000 of the second replica are within the penalty (2×10s) after 20000.
			exp:    []dedupF{{10000, 1}, {20000, 1}, {50000, 2}, {60000, 2}},
			expErr: "replica failed at 30000",
		},
		{
			name:     "second replica fails",
			replicas: []chunkenc.Iterator{dedupListIter(series(1)), failing(2, 30000)},
			exp:      series(1),
			expErr:   "replica failed at 30000",
		},
		{
			name:     "third replica fails",
			replicas: []chunkenc.Iterator{dedupListIter(series(1)), dedupListIter(series(2)), failing(3, 10000)},
			exp:      series(1),
			expErr:   "replica failed at 10000",
		},
		{
			name:     "several fail: the first replica's error is reported",
			replicas: []chunkenc.Iterator{dedupListIter(series(1)), failing(2, 50000), failing(3, 20000)},
			exp:      series(1),
			expErr:   "replica failed at 50000",
		},
		{
			name:     "all fail at once",
			replicas: []chunkenc.Iterator{failing(1, 0), failing(2, 0)},
			expErr:   "replica failed at 0",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := newDedupIterator(tc.replicas)
			var got []dedupF
			for it.Next() != chunkenc.ValNone {
				ts, v := it.At()
				got = append(got, dedupF{ts, v})
			}
			testutil.Equals(t, tc.exp, got)
			testutil.NotOk(t, it.Err())
			testutil.Equals(t, tc.expErr, it.Err().Error())
		})
	}

	t.Run("a replica's error is returned as is", func(t *testing.T) {
		sentinel := errors.New("boom")
		it := newDedupIterator([]chunkenc.Iterator{dedupListIter(series(1)), &dedupErrIterator{Iterator: dedupListIter(series(2)), err: sentinel}})
		for it.Next() != chunkenc.ValNone {
		}
		testutil.Assert(t, errors.Is(it.Err(), sentinel), "got %v", it.Err())
	})
}

// dedupOracle is a slice-based model of the penalty algorithm: replicas are folded pairwise, each pair merged
// with the rule of Thanos's dedup iterator (seek the replica just used to after the last sample, the other one to
// after the last sample plus its penalty, take the earlier candidate, the first replica on ties).
func dedupOracle(replicas ...[]dedupF) []dedupF {
	if len(replicas) == 0 {
		return nil
	}
	out := replicas[0]
	for _, r := range replicas[1:] {
		out = dedupOraclePair(out, r)
	}
	return out
}

func dedupOraclePair(a, b []dedupF) []dedupF {
	seek := func(s []dedupF, i int, t int64) int {
		for i < len(s) && s[i].t < t {
			i++
		}
		return i
	}
	var out []dedupF
	var i, j int
	var penA, penB int64
	for {
		if len(out) > 0 {
			last := out[len(out)-1].t
			i, j = seek(a, i, last+1+penA), seek(b, j, last+1+penB)
		}
		var pick dedupF
		switch {
		case i == len(a) && j == len(b):
			return out
		case j == len(b):
			pick, penA = a[i], 0
		case i == len(a):
			pick, penB = b[j], 0
		default:
			pen := int64(dedupInitialPenalty)
			if a[i].t <= b[j].t {
				pick = a[i]
				if len(out) > 0 {
					pen = 2 * (pick.t - out[len(out)-1].t)
				}
				penA, penB = 0, pen
			} else {
				pick = b[j]
				if len(out) > 0 {
					pen = 2 * (pick.t - out[len(out)-1].t)
				}
				penA, penB = pen, 0
			}
		}
		out = append(out, pick)
	}
}

func dedupRandomReplica(rng *rand.Rand, id int) []dedupF {
	// Timestamps on a 5s grid half of the time, so that ties and samples right at the penalty boundary occur.
	grid := rng.IntN(2) == 0
	interval := []int64{1000, 10000, 15000, 30000}[rng.IntN(4)]
	ts := rng.Int64N(40000) - 20000
	if grid {
		interval, ts = 5000*(1+rng.Int64N(3)), 5000*rng.Int64N(4)
	}
	n := rng.IntN(60)
	out := make([]dedupF, 0, n)
	for i := range n {
		step := interval
		switch rng.IntN(10) {
		case 0:
			step = interval * (2 + rng.Int64N(8))
		case 1:
			step = max(1, interval+rng.Int64N(3000)-1500)
			if grid {
				step = 5000 * (1 + rng.Int64N(6))
			}
		case 2:
			step = 1 + rng.Int64N(3)
		}
		ts += step
		out = append(out, dedupF{ts, float64(id*1000 + i)})
	}
	return out
}

// dedupEquals is testutil.Equals that does not tell a nil slice from an empty one.
func dedupEquals(t testing.TB, exp, got []dedupF, msg ...any) {
	t.Helper()
	if len(exp) == 0 && len(got) == 0 {
		return
	}
	testutil.Equals(t, exp, got, msg...)
}

func TestDedupIterator_Random(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for iter := range 3000 {
		replicas := make([][]dedupF, 1+rng.IntN(4))
		for i := range replicas {
			replicas[i] = dedupRandomReplica(rng, i)
			if i > 0 && rng.IntN(2) == 0 {
				// A lossy, possibly shifted copy of the first replica, as HA pairs produce.
				shift := rng.Int64N(2) * 700 * int64(i)
				replicas[i] = replicas[i][:0]
				for _, s := range replicas[0] {
					if rng.IntN(6) != 0 {
						replicas[i] = append(replicas[i], dedupF{s.t + shift, s.f + float64(1000*i)})
					}
				}
			}
		}
		exp := dedupOracle(replicas...)
		all := expandDedupFloats(t, newDedupIterator(dedupFloatIters(t, replicas...)))
		dedupEquals(t, exp, all, "iteration %d", iter)

		// Seek on a fresh iterator lands on the first sample at or after t of the full iteration, and the
		// following samples are the same too.
		for range 3 {
			target := rng.Int64N(2_000_000) - 30000
			it := newDedupIterator(dedupFloatIters(t, replicas...))
			k := 0
			for k < len(all) && all[k].t < target {
				k++
			}
			typ := it.Seek(target)
			if k == len(all) {
				testutil.Equals(t, chunkenc.ValNone, typ, "iteration %d: seek %d", iter, target)
				continue
			}
			testutil.Equals(t, chunkenc.ValFloat, typ, "iteration %d: seek %d", iter, target)
			ts, v := it.At()
			testutil.Equals(t, all[k], dedupF{ts, v}, "iteration %d: seek %d", iter, target)
			dedupEquals(t, all[k+1:], expandDedupFloats(t, it), "iteration %d: after seek %d", iter, target)
		}
	}
}

func TestDedupIterator_NoAllocationsPerSample(t *testing.T) {
	toSlice := func(in []dedupF) chunks.SampleSlice {
		out := make(chunks.SampleSlice, len(in))
		for i, s := range in {
			out[i] = s
		}
		return out
	}
	// Two shifted replicas with gaps in different places, so that the iterator switches several times.
	a := toSlice(dedupSeries(0, 15000, 10000, 1, 300000, 315000, 330000, 345000, 7500000, 7515000, 7530000))
	b := toSlice(dedupSeries(2000, 15000, 10000, 2, 1500000, 1515000, 1530000, 1545000))
	c := toSlice(dedupSeries(4000, 15000, 10000, 3))
	samples := 0
	allocs := testing.AllocsPerRun(20, func() {
		it := newDedupIterator([]chunkenc.Iterator{
			storage.NewListSeriesIterator(a), storage.NewListSeriesIterator(b), storage.NewListSeriesIterator(c),
		})
		samples = 0
		for it.Next() != chunkenc.ValNone {
			_, _ = it.At()
			samples++
		}
	})
	testutil.Assert(t, samples > 9000, "only %d samples", samples)
	// The input iterators and the two pair iterators; nothing per sample.
	testutil.Assert(t, allocs <= 8, "%v allocations for %d samples", allocs, samples)
}

func BenchmarkDedupIterator(b *testing.B) {
	const n = 10000
	// Both replicas scrape every 15s, 2s apart; the first one loses 6 scrapes out of every 1000.
	var gaps []int64
	for i := int64(500); i < n; i += 1000 {
		for k := range int64(6) {
			gaps = append(gaps, (i+k)*15000)
		}
	}
	ra := make(chunks.SampleSlice, 0, n)
	for _, s := range dedupSeries(0, 15000, n, 1, gaps...) {
		ra = append(ra, s)
	}
	rb := make(chunks.SampleSlice, 0, n)
	for _, s := range dedupSeries(2000, 15000, n, 2) {
		rb = append(rb, s)
	}

	b.ReportAllocs()
	var samples int
	var sum float64
	for b.Loop() {
		it := newDedupIterator([]chunkenc.Iterator{storage.NewListSeriesIterator(ra), storage.NewListSeriesIterator(rb)})
		for it.Next() == chunkenc.ValFloat {
			_, v := it.At()
			sum += v
			samples++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(samples), "ns/sample")
	_ = sum
}
