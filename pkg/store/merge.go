package store

import (
	"bytes"
	"cmp"
	"slices"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// MergeSeries sorts series by labels and makes the series of one label set (the same series in several blocks,
// from one store or several) one series whose chunks are ordered by CompareChunks, identical chunks (blocks that
// overlap, replicas) kept once. The bucket store merges its blocks' series with it, the querier its
// store-gateways' answers.
//
// The labels of each series must be sorted by name, as every StoreAPI server sends them (a series whose labels
// are not is given a sorted copy). The input series are not modified; an output series may share its labels and
// chunks (and, for a label set seen once with its chunks in order and unique, its chunk slice) with an input one.
func MergeSeries(series []*storepb.Series) []*storepb.Series {
	ks := make([]*storepb.Series, len(series))
	for i, s := range series {
		if !slices.IsSortedFunc(s.GetLabels(), compareLabelNames) {
			ls := slices.Clone(s.GetLabels())
			slices.SortStableFunc(ls, compareLabelNames)
			s = &storepb.Series{Labels: ls, Chunks: s.GetChunks()}
		}
		ks[i] = s
	}
	slices.SortStableFunc(ks, func(a, b *storepb.Series) int { return compareLabelsPB(a.GetLabels(), b.GetLabels()) })
	out := make([]*storepb.Series, 0, len(ks))
	for i := 0; i < len(ks); {
		j := i + 1
		for j < len(ks) && compareLabelsPB(ks[i].GetLabels(), ks[j].GetLabels()) == 0 {
			j++
		}
		chks := ks[i].GetChunks()
		if j > i+1 {
			chks = nil
			for _, s := range ks[i:j] {
				chks = append(chks, s.GetChunks()...)
			}
		}
		out = append(out, &storepb.Series{Labels: ks[i].GetLabels(), Chunks: uniqueChunks(chks, j > i+1)})
		i = j
	}
	return out
}

// uniqueChunks orders chunks by CompareChunks and drops the repeats of identical ones. Unless owned (a slice
// MergeSeries built), chks is copied before it is changed.
func uniqueChunks(chks []*storepb.AggrChunk, owned bool) []*storepb.AggrChunk {
	if len(chks) < 2 {
		return chks
	}
	sorted := slices.IsSortedFunc(chks, CompareChunks)
	if sorted {
		dup := false
		for i := 1; i < len(chks) && !dup; i++ {
			dup = CompareChunks(chks[i-1], chks[i]) == 0
		}
		if !dup {
			return chks
		}
	}
	if !owned {
		chks = slices.Clone(chks)
	}
	if !sorted {
		slices.SortStableFunc(chks, CompareChunks)
	}
	return slices.CompactFunc(chks, func(a, b *storepb.AggrChunk) bool { return CompareChunks(a, b) == 0 })
}

// CompareChunks orders chunks by min time, then max time, then the encoding and bytes of the raw chunk and of
// each aggregate (count, sum, min, max, counter; an absent one first), as Thanos's AggrChunk.Compare does. It
// is 0 only for identical chunks (the optional hash of the data is not compared): MergeSeries keeps one of them.
func CompareChunks(a, b *storepb.AggrChunk) int {
	if c := cmp.Compare(a.GetMinTime(), b.GetMinTime()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.GetMaxTime(), b.GetMaxTime()); c != 0 {
		return c
	}
	if c := compareChunkData(a.GetRaw(), b.GetRaw()); c != 0 {
		return c
	}
	if c := compareChunkData(a.GetCount(), b.GetCount()); c != 0 {
		return c
	}
	if c := compareChunkData(a.GetSum(), b.GetSum()); c != 0 {
		return c
	}
	if c := compareChunkData(a.GetMin(), b.GetMin()); c != 0 {
		return c
	}
	if c := compareChunkData(a.GetMax(), b.GetMax()); c != 0 {
		return c
	}
	return compareChunkData(a.GetCounter(), b.GetCounter())
}

// compareChunkData orders chunks by encoding, then bytes; nil first.
func compareChunkData(a, b *storepb.Chunk) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	if c := cmp.Compare(a.GetType(), b.GetType()); c != 0 {
		return c
	}
	return bytes.Compare(a.GetData(), b.GetData())
}

func compareLabelNames(a, b *labelpb.Label) int { return cmp.Compare(a.GetName(), b.GetName()) }
