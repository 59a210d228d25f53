package compact

import (
	"fmt"
	"sort"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/block"
)

// Group is a compaction group: blocks of one tenant with the same external labels and resolution. Only blocks of
// one group are ever compacted together.
type Group struct {
	// Key is GroupKey of the group's labels and resolution.
	Key        string
	Labels     map[string]string
	Resolution int64
	// Metas are the group's blocks, sorted by MinTime, then ULID.
	Metas []*block.Meta
}

// GroupKey identifies the compaction group of blocks with external labels lset and resolution res the way
// Thanos's DefaultGroupKey does: "<resolution>@<hash of the labels>".
func GroupKey(lset map[string]string, res int64) string {
	return fmt.Sprintf("%d@%v", res, labels.FromMap(lset).Hash())
}

// Groups splits metas into compaction groups, sorted by key; each group's metas are sorted by MinTime, then
// ULID.
func Groups(metas []*block.Meta) []*Group {
	byKey := map[string]*Group{}
	for _, m := range metas {
		k := GroupKey(m.Thanos.Labels, m.Thanos.Downsample.Resolution)
		g, ok := byKey[k]
		if !ok {
			g = &Group{Key: k, Labels: m.Thanos.Labels, Resolution: m.Thanos.Downsample.Resolution}
			byKey[k] = g
		}
		g.Metas = append(g.Metas, m)
	}
	groups := make([]*Group, 0, len(byKey))
	for _, g := range byKey {
		sortMetas(g.Metas)
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].Key < groups[j].Key })
	return groups
}
