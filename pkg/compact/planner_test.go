package compact

import (
	"testing"
	"time"

	"github.com/efficientgo/core/testutil"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/stratametrics/strata/pkg/block"
)

// pmeta is a meta for planning: block n (its ULID derived from n) over [mint, maxt) hours.
func pmeta(n int, mint, maxt float64, sources ...int) *block.Meta {
	m := &block.Meta{BlockMeta: tsdb.BlockMeta{ULID: testULID(n), MinTime: int64(mint * 3600e3), MaxTime: int64(maxt * 3600e3), Version: 1}}
	for _, s := range sources {
		m.Compaction.Sources = append(m.Compaction.Sources, testULID(s))
	}
	m.Compaction.Level = 1
	if len(sources) > 1 {
		m.Compaction.Level = 2
	}
	m.Thanos.Labels = map[string]string{"tenant_id": "t"}
	return m
}

func testULID(n int) ulid.ULID {
	var id ulid.ULID
	id[0], id[15] = byte(n>>8), byte(n)
	return id
}

func ids(metas []*block.Meta) []ulid.ULID {
	var out []ulid.ULID
	for _, m := range metas {
		out = append(out, m.ULID)
	}
	return out
}

func idsOf(ns ...int) []ulid.ULID {
	var out []ulid.ULID
	for _, n := range ns {
		out = append(out, testULID(n))
	}
	return out
}

func TestPlan(t *testing.T) {
	ranges, err := RangesMillis(DefaultBlockRanges)
	testutil.Ok(t, err)
	for _, tc := range []struct {
		name  string
		metas []*block.Meta
		want  []ulid.ULID
	}{
		{name: "nothing", want: nil},
		{name: "one block", metas: []*block.Meta{pmeta(1, 0, 2)}, want: nil},
		{name: "three replicas of one range are merged vertically, even the newest",
			metas: []*block.Meta{pmeta(3, 0, 2), pmeta(1, 0, 2), pmeta(2, 0, 2)}, want: idsOf(1, 2, 3)},
		{name: "the first run of overlaps comes first, leveled blocks before it wait",
			metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 2, 4), pmeta(3, 2, 4), pmeta(4, 3, 5), pmeta(5, 6, 8), pmeta(6, 6, 8)},
			want:  idsOf(2, 3, 4)},
		{name: "partial overlap (sidecar vs pushed) is merged",
			metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 1, 3)}, want: idsOf(1, 2)},
		{name: "adjacent blocks filling 12h are leveled",
			metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 2, 4), pmeta(3, 4, 6), pmeta(4, 6, 8), pmeta(5, 8, 10), pmeta(6, 10, 12), pmeta(7, 12, 14)},
			want:  idsOf(1, 2, 3, 4, 5, 6)},
		{name: "a 12h range not full whose last block is the newest waits",
			metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 2, 4), pmeta(3, 4, 6)}, want: nil},
		{name: "a 12h range with a gap that ends before the newest block is compacted",
			metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 4, 6), pmeta(3, 12, 14), pmeta(4, 14, 16)}, want: idsOf(1, 2)},
		{name: "a 12h range with a gap ending after the second newest block's start waits",
			metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 4, 6), pmeta(3, 12, 14)}, want: nil},
		{name: "two 12h blocks fill a 24h range",
			metas: []*block.Meta{pmeta(1, 0, 12, 10, 11), pmeta(2, 12, 24, 12, 13), pmeta(3, 24, 26)}, want: idsOf(1, 2)},
		{name: "a misaligned block is left out of leveling",
			metas: []*block.Meta{pmeta(1, 11, 13), pmeta(2, 13, 14), pmeta(3, 14, 16), pmeta(4, 24, 26), pmeta(5, 26, 28)}, want: idsOf(2, 3)},
		{name: "single blocks per range are not compacted",
			metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 12, 14), pmeta(3, 24, 26)}, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, ids(Plan(tc.metas, ranges)))
		})
	}
}

func TestRangesMillis(t *testing.T) {
	got, err := RangesMillis([]time.Duration{time.Minute, 2 * time.Minute})
	testutil.Ok(t, err)
	testutil.Equals(t, []int64{60000, 120000}, got)
	for _, bad := range [][]time.Duration{nil, {0}, {2 * time.Hour, time.Hour}, {time.Hour, time.Hour}} {
		_, err := RangesMillis(bad)
		testutil.NotOk(t, err, "%v", bad)
	}
}

func TestGroups(t *testing.T) {
	a := pmeta(1, 0, 2)
	b := pmeta(2, 0, 2)
	c := pmeta(3, 0, 2)
	c.Thanos.Labels = map[string]string{"tenant_id": "t", "cluster": "eu"}
	d := pmeta(4, 0, 2)
	d.Thanos.Downsample.Resolution = Resolution5m
	e := pmeta(5, -2, 0)
	groups := Groups([]*block.Meta{b, c, a, d, e})
	testutil.Equals(t, 3, len(groups))
	byKey := map[string][]ulid.ULID{}
	for _, g := range groups {
		byKey[g.Key] = ids(g.Metas)
		testutil.Equals(t, GroupKey(g.Labels, g.Resolution), g.Key)
	}
	testutil.Equals(t, idsOf(5, 1, 2), byKey[GroupKey(map[string]string{"tenant_id": "t"}, 0)])
	testutil.Equals(t, idsOf(3), byKey[GroupKey(map[string]string{"cluster": "eu", "tenant_id": "t"}, 0)])
	testutil.Equals(t, idsOf(4), byKey[GroupKey(map[string]string{"tenant_id": "t"}, Resolution5m)])
	testutil.Assert(t, GroupKey(map[string]string{"tenant_id": "t"}, 0) != GroupKey(map[string]string{"tenant_id": "u"}, 0))
	testutil.Assert(t, GroupKey(map[string]string{"tenant_id": "t"}, 0)[:2] == "0@")
}

func TestRedundant(t *testing.T) {
	for _, tc := range []struct {
		name  string
		metas []*block.Meta
		want  []ulid.ULID
	}{
		{name: "replicas are not redundant", metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 0, 2)}},
		{name: "sources of an uploaded compacted block are", metas: []*block.Meta{pmeta(1, 0, 2), pmeta(2, 0, 2), pmeta(3, 0, 2, 1, 2)},
			want: idsOf(1, 2)},
		{name: "a compacted block inside a larger one is", metas: []*block.Meta{pmeta(3, 0, 2, 1, 2), pmeta(6, 0, 4, 1, 2, 4, 5)},
			want: idsOf(3)},
		{name: "of two blocks with the same sources the greater ULID stays", metas: []*block.Meta{pmeta(3, 0, 2, 1, 2), pmeta(4, 0, 2, 1, 2)},
			want: idsOf(3)},
		{name: "a block sharing only some sources is not", metas: []*block.Meta{pmeta(3, 0, 2, 1, 2), pmeta(4, 0, 2, 2, 5)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.Equals(t, tc.want, ids(Redundant(tc.metas)))
		})
	}
}
