package compact

import (
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/oklog/ulid/v2"

	"github.com/stratametrics/strata/pkg/block"
)

// DefaultBlockRanges are the compaction levels: blocks are compacted into aligned 2h, then 12h, then 24h blocks
// (the first range is the one of the blocks the ingesters ship; it is never a target).
var DefaultBlockRanges = []time.Duration{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}

// RangesMillis converts block ranges to milliseconds, checking that they are positive and increasing.
func RangesMillis(ranges []time.Duration) ([]int64, error) {
	if len(ranges) == 0 {
		return nil, errors.New("no block ranges")
	}
	out := make([]int64, len(ranges))
	for i, r := range ranges {
		out[i] = r.Milliseconds()
		if out[i] <= 0 {
			return nil, errors.Newf("block range %v is not a positive number of milliseconds", r)
		}
		if i > 0 && out[i] <= out[i-1] {
			return nil, errors.Newf("block ranges must increase: %v after %v", r, ranges[i-1])
		}
	}
	return out, nil
}

// Plan returns the blocks of one group to compact next, or nil when there is nothing to do. metas are the
// group's blocks eligible for compaction (no deletion or no-compact mark, old enough), in any order; ranges are
// the block ranges in milliseconds, increasing.
//
// As Thanos's and Prometheus's planners: overlapping blocks come first (the replicas of one range shipped by
// several ingesters, or a sidecar's block and the pushed ones): the first run of transitively overlapping blocks
// is returned, to be merged vertically. Without overlaps, blocks are compacted leveled: for each range after the
// first, the first aligned range holding at least two blocks that either fill it or end before the newest
// block starts. The newest block is never picked for leveled compaction, leaving its range time to fill.
func Plan(metas []*block.Meta, ranges []int64) []*block.Meta {
	sorted := append([]*block.Meta(nil), metas...)
	sortMetas(sorted)
	if res := overlapping(sorted); len(res) > 0 {
		return res
	}
	if len(sorted) < 2 || len(ranges) < 2 {
		return nil
	}
	sorted = sorted[:len(sorted)-1] // not the newest block
	highTime := sorted[len(sorted)-1].MinTime
	for _, r := range ranges[1:] {
		for _, p := range splitByRange(sorted, r) {
			if len(p) < 2 {
				continue
			}
			mint, maxt := p[0].MinTime, p[len(p)-1].MaxTime
			if maxt-mint == r || maxt <= highTime {
				return p
			}
		}
	}
	return nil
}

// overlapping returns the first run of transitively overlapping blocks of metas (sorted by MinTime).
func overlapping(sorted []*block.Meta) []*block.Meta {
	if len(sorted) < 2 {
		return nil
	}
	var res []*block.Meta
	maxt := sorted[0].MaxTime
	for i := 1; i < len(sorted); i++ {
		m := sorted[i]
		if m.MinTime < maxt {
			if len(res) == 0 {
				res = append(res, sorted[i-1])
			}
			res = append(res, m)
		} else if len(res) > 0 {
			break
		}
		maxt = max(maxt, m.MaxTime)
	}
	return res
}

// splitByRange splits metas (sorted by MinTime) into runs of blocks that fall into one aligned range of length
// r; blocks that do not fit in their range (misaligned, or longer) are left out.
func splitByRange(sorted []*block.Meta, r int64) [][]*block.Meta {
	var parts [][]*block.Meta
	for i := 0; i < len(sorted); {
		m := sorted[i]
		t0 := r * (m.MinTime / r)
		if m.MinTime < 0 {
			t0 = r * ((m.MinTime - r + 1) / r)
		}
		if m.MaxTime > t0+r {
			i++
			continue
		}
		var part []*block.Meta
		for ; i < len(sorted) && sorted[i].MaxTime <= t0+r; i++ {
			part = append(part, sorted[i])
		}
		if len(part) > 0 {
			parts = append(parts, part)
		}
	}
	return parts
}

// Redundant returns the blocks of one group (marked for deletion excluded) made redundant by another block of
// the group: their sources are all among the other block's sources. That is how a compaction interrupted
// between the upload of its result and the deletion marks of its sources is finished: the next run marks the
// sources. Of blocks with the same sources, the one with the highest compaction level, then the greatest ULID,
// is kept.
func Redundant(metas []*block.Meta) []*block.Meta {
	var res []*block.Meta
	for _, a := range metas {
		for _, b := range metas {
			if a == b || !covers(b, a) {
				continue
			}
			if len(sources(a)) < len(sources(b)) || keepsOver(b, a) {
				res = append(res, a)
				break
			}
		}
	}
	return res
}

// keepsOver says which of two blocks with the same sources is kept.
func keepsOver(b, a *block.Meta) bool {
	if b.Compaction.Level != a.Compaction.Level {
		return b.Compaction.Level > a.Compaction.Level
	}
	return b.ULID.Compare(a.ULID) > 0
}

// covers says whether every source of a is a source of b.
func covers(b, a *block.Meta) bool {
	bs := map[ulid.ULID]struct{}{}
	for _, s := range sources(b) {
		bs[s] = struct{}{}
	}
	for _, s := range sources(a) {
		if _, ok := bs[s]; !ok {
			return false
		}
	}
	return true
}

// sources are the blocks a block was compacted from; a block never compacted is its own source.
func sources(m *block.Meta) []ulid.ULID {
	if len(m.Compaction.Sources) == 0 {
		return []ulid.ULID{m.ULID}
	}
	return m.Compaction.Sources
}
