package query

import (
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// dedupInitialPenalty is the head start, in milliseconds, the replica that was not picked must give away
// before any sample interval has been observed. Scrape intervals are seconds long, so 5s keeps two replicas
// scraping the same target a little apart from both being emitted at the start of a series.
const dedupInitialPenalty = 5000

// newDedupIterator merges the replicas of one series — each a time-ordered sample iterator — into one, with
// Thanos's penalty algorithm: stay on one replica; when it has a gap longer than the penalty, switch to another.
//
// Replicas are combined pairwise, left to right: ((r0, r1), r2), ... Within a pair, ties on the timestamp go to
// the left side. Float samples and native histograms of either kind follow the same rule; values are never
// adjusted (there is no counter-reset compensation). Err reports the first error of the replicas, in order.
func newDedupIterator(replicas []chunkenc.Iterator) chunkenc.Iterator {
	switch len(replicas) {
	case 0:
		return chunkenc.NewNopIterator()
	case 1:
		return replicas[0]
	}
	it := chunkenc.Iterator(newPenaltyPairIterator(replicas[0], replicas[1]))
	for _, r := range replicas[2:] {
		it = newPenaltyPairIterator(it, r)
	}
	return it
}

type penaltyPairState uint8

const (
	penaltyPairFresh     penaltyPairState = iota // neither replica has been advanced yet
	penaltyPairActive                            // positioned on a sample of cur
	penaltyPairExhausted                         // both replicas are done
)

// penaltyPairIterator deduplicates two replicas. After each emitted sample at lastT, the replica that produced
// it may continue from lastT+1, while the other one must skip ahead by its penalty: twice the distance between
// the last two emitted samples (dedupInitialPenalty after the first one). The earlier of the two candidates is
// emitted next. So the iterator only moves to the other replica when the one it follows is silent for longer
// than about two sample intervals, and a switch never makes samples denser than the original scrape rate.
type penaltyPairIterator struct {
	a, b chunkenc.Iterator
	// Value type each replica is positioned on; ValNone once a replica is exhausted (it is then never touched again).
	aType, bType chunkenc.ValueType

	state   penaltyPairState
	cur     chunkenc.Iterator // the replica the current sample comes from
	curType chunkenc.ValueType
	lastT   int64 // timestamp of the current sample
	// How far past lastT+1 each replica must seek for the next candidate. The replica just used has 0.
	penA, penB int64
}

func newPenaltyPairIterator(a, b chunkenc.Iterator) *penaltyPairIterator {
	return &penaltyPairIterator{a: a, b: b, cur: a, lastT: math.MinInt64}
}

func (it *penaltyPairIterator) Next() chunkenc.ValueType {
	switch it.state {
	case penaltyPairFresh:
		it.aType = it.a.Next()
		it.bType = it.b.Next()
	case penaltyPairActive:
		if it.aType != chunkenc.ValNone {
			it.aType = it.a.Seek(penaltySeekTarget(it.lastT, it.penA))
		}
		if it.bType != chunkenc.ValNone {
			it.bType = it.b.Seek(penaltySeekTarget(it.lastT, it.penB))
		}
	default:
		return chunkenc.ValNone
	}
	return it.choose()
}

// choose picks the next sample among the candidates both replicas are positioned on and updates the penalties.
func (it *penaltyPairIterator) choose() chunkenc.ValueType {
	first := it.state == penaltyPairFresh
	switch {
	case it.aType == chunkenc.ValNone && it.bType == chunkenc.ValNone:
		it.state = penaltyPairExhausted
		it.curType = chunkenc.ValNone
		return chunkenc.ValNone
	case it.bType == chunkenc.ValNone:
		it.useA(it.a.AtT())
	case it.aType == chunkenc.ValNone:
		it.useB(it.b.AtT())
	default:
		ta, tb := it.a.AtT(), it.b.AtT()
		if ta <= tb {
			it.penB = penaltyFor(first, it.lastT, ta)
			it.useA(ta)
		} else {
			it.penA = penaltyFor(first, it.lastT, tb)
			it.useB(tb)
		}
	}
	it.state = penaltyPairActive
	return it.curType
}

func (it *penaltyPairIterator) useA(t int64) {
	it.cur, it.curType, it.lastT, it.penA = it.a, it.aType, t, 0
}

func (it *penaltyPairIterator) useB(t int64) {
	it.cur, it.curType, it.lastT, it.penB = it.b, it.bType, t, 0
}

// penaltyFor is the penalty for the replica not picked when the other one supplies a sample at t.
func penaltyFor(first bool, lastT, t int64) int64 {
	if first {
		return dedupInitialPenalty
	}
	d := t - lastT // > 0: the picked replica was sought past lastT
	if d > math.MaxInt64/2 {
		return math.MaxInt64
	}
	return 2 * d
}

// penaltySeekTarget is lastT+1+penalty, saturating instead of wrapping around.
func penaltySeekTarget(lastT, penalty int64) int64 {
	if lastT > math.MaxInt64-1-penalty {
		return math.MaxInt64
	}
	return lastT + 1 + penalty
}

// Seek steps forward with Next rather than seeking the replicas, so that the replica followed at t, and the
// samples skipped by penalties, are the same as when iterating from the start. It never moves backwards: when
// the current sample is at or after t it stays there.
func (it *penaltyPairIterator) Seek(t int64) chunkenc.ValueType {
	if it.state == penaltyPairFresh {
		it.Next()
	}
	for it.state == penaltyPairActive {
		if it.lastT >= t {
			return it.curType
		}
		it.Next()
	}
	return chunkenc.ValNone
}

func (it *penaltyPairIterator) At() (int64, float64) { return it.cur.At() }

func (it *penaltyPairIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.cur.AtHistogram(h)
}

func (it *penaltyPairIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.cur.AtFloatHistogram(fh)
}

func (it *penaltyPairIterator) AtT() int64 {
	if it.state == penaltyPairActive {
		return it.lastT
	}
	return it.cur.AtT()
}

func (it *penaltyPairIterator) AtST() int64 { return it.cur.AtST() }

func (it *penaltyPairIterator) Err() error {
	if err := it.a.Err(); err != nil {
		return err
	}
	return it.b.Err()
}
