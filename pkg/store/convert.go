// Package store serves and reads the Thanos StoreAPI: TSDBStore answers it over Prometheus storage, Client
// calls a remote one, and Proxy fans a request out to many and merges their sorted streams.
package store

import (
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// LabelsToPB converts labels to their wire form, in the same (sorted) order.
func LabelsToPB(lset labels.Labels) []*labelpb.Label {
	out := make([]*labelpb.Label, 0, lset.Len())
	lset.Range(func(l labels.Label) { out = append(out, &labelpb.Label{Name: l.Name, Value: l.Value}) })
	return out
}

// LabelsFromPB converts wire labels to labels.Labels; it sorts them, as a remote store's order is not trusted.
func LabelsFromPB(ls []*labelpb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.GetName(), l.GetValue())
	}
	b.Sort()
	return b.Labels()
}

// MatchersFromPB converts wire matchers, compiling regular expressions; a bad one is an error.
func MatchersFromPB(ms []*storepb.LabelMatcher) ([]*labels.Matcher, error) {
	out := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		var t labels.MatchType
		switch m.GetType() {
		case storepb.LabelMatcher_EQ:
			t = labels.MatchEqual
		case storepb.LabelMatcher_NEQ:
			t = labels.MatchNotEqual
		case storepb.LabelMatcher_RE:
			t = labels.MatchRegexp
		case storepb.LabelMatcher_NRE:
			t = labels.MatchNotRegexp
		default:
			return nil, errors.Newf("unknown label matcher type %d for label %q", m.GetType(), m.GetName())
		}
		lm, err := labels.NewMatcher(t, m.GetName(), m.GetValue())
		if err != nil {
			return nil, errors.Wrapf(err, "compile matcher %s", m.GetName())
		}
		out = append(out, lm)
	}
	return out, nil
}

// MatchersToPB converts matchers to their wire form.
func MatchersToPB(ms ...*labels.Matcher) []*storepb.LabelMatcher {
	out := make([]*storepb.LabelMatcher, 0, len(ms))
	for _, m := range ms {
		var t storepb.LabelMatcher_Type
		switch m.Type {
		case labels.MatchEqual:
			t = storepb.LabelMatcher_EQ
		case labels.MatchNotEqual:
			t = storepb.LabelMatcher_NEQ
		case labels.MatchRegexp:
			t = storepb.LabelMatcher_RE
		case labels.MatchNotRegexp:
			t = storepb.LabelMatcher_NRE
		}
		out = append(out, &storepb.LabelMatcher{Type: t, Name: m.Name, Value: m.Value})
	}
	return out
}

// EncodingToPB maps a Prometheus chunk encoding to the StoreAPI's; false for encodings the API has no name for.
func EncodingToPB(e chunkenc.Encoding) (storepb.Chunk_Encoding, bool) {
	switch e {
	case chunkenc.EncXOR:
		return storepb.Chunk_XOR, true
	case chunkenc.EncHistogram:
		return storepb.Chunk_HISTOGRAM, true
	case chunkenc.EncFloatHistogram:
		return storepb.Chunk_FLOAT_HISTOGRAM, true
	}
	return 0, false
}

// EncodingFromPB is the inverse of EncodingToPB.
func EncodingFromPB(e storepb.Chunk_Encoding) (chunkenc.Encoding, bool) {
	switch e {
	case storepb.Chunk_XOR:
		return chunkenc.EncXOR, true
	case storepb.Chunk_HISTOGRAM:
		return chunkenc.EncHistogram, true
	case storepb.Chunk_FLOAT_HISTOGRAM:
		return chunkenc.EncFloatHistogram, true
	}
	return chunkenc.EncNone, false
}

// matchExternalLabels checks the matchers that name an external label against it. It returns false when one
// of them does not match (the store holds nothing the request wants), else the matchers left for the TSDB.
func matchExternalLabels(ms []*labels.Matcher, ext labels.Labels) (bool, []*labels.Matcher) {
	rest := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if ext.Has(m.Name) {
			if !m.Matches(ext.Get(m.Name)) {
				return false, nil
			}
			continue
		}
		rest = append(rest, m)
	}
	return true, rest
}

// labelsWithExternalToPB is LabelsToPB(withExternalLabels(lset, ext)) in one pass and two allocations: both are
// sorted, so they are merged, an external label replacing a series label of the same name.
func labelsWithExternalToPB(lset, ext labels.Labels) []*labelpb.Label {
	n := lset.Len() + ext.Len()
	structs := make([]labelpb.Label, 0, n)
	var extLs []labels.Label
	ext.Range(func(l labels.Label) { extLs = append(extLs, l) })
	j := 0
	lset.Range(func(l labels.Label) {
		for j < len(extLs) && extLs[j].Name < l.Name {
			structs = append(structs, labelpb.Label{Name: extLs[j].Name, Value: extLs[j].Value})
			j++
		}
		if j < len(extLs) && extLs[j].Name == l.Name {
			return // replaced by the external label, added next
		}
		structs = append(structs, labelpb.Label{Name: l.Name, Value: l.Value})
	})
	for ; j < len(extLs); j++ {
		structs = append(structs, labelpb.Label{Name: extLs[j].Name, Value: extLs[j].Value})
	}
	out := make([]*labelpb.Label, len(structs))
	for i := range structs {
		out[i] = &structs[i]
	}
	return out
}
