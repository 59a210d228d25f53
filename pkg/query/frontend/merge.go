package frontend

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/labels"
)

// MergeResponses merges the successful answers to consecutive, non-overlapping parts of one range query, in
// time order, into the answer to the whole: series merged by label set (samples concatenated in order), sorted
// by labels as Prometheus's engine sorts a matrix; warnings and infos de-duplicated in order of first appearance;
// stats summed (peaks: the largest). Exported for the results cache, which merges extents the same way.
func MergeResponses(resps []*Response) (*Response, error) {
	out := &Response{StatusCode: http.StatusOK, Status: "success", ResultType: "matrix"}
	index := map[string]int{}
	seenW, seenI := map[string]bool{}, map[string]bool{}
	var stats []json.RawMessage
	for _, r := range resps {
		if r == nil || !r.IsSuccess() || r.Raw != nil || r.ResultType != "matrix" {
			return nil, errors.New("merge: every part must be a decoded matrix answer")
		}
		for _, s := range r.Matrix {
			key := s.Labels.String()
			i, ok := index[key]
			if !ok {
				index[key] = len(out.Matrix)
				out.Matrix = append(out.Matrix, SampleStream{
					Labels: s.Labels, Floats: slices.Clone(s.Floats), Histograms: slices.Clone(s.Histograms),
				})
				continue
			}
			m := &out.Matrix[i]
			m.Floats = append(m.Floats, s.Floats...)
			m.Histograms = append(m.Histograms, s.Histograms...)
		}
		out.Warnings = appendNew(out.Warnings, seenW, r.Warnings)
		out.Infos = appendNew(out.Infos, seenI, r.Infos)
		if len(r.Stats) > 0 {
			stats = append(stats, r.Stats)
		}
	}
	if out.Matrix == nil {
		out.Matrix = []SampleStream{}
	}
	slices.SortFunc(out.Matrix, func(a, b SampleStream) int { return labels.Compare(a.Labels, b.Labels) })
	if len(stats) > 0 {
		merged, err := mergeStats(stats)
		if err != nil {
			return nil, err
		}
		out.Stats = merged
	}
	return out, nil
}

func appendNew(dst []string, seen map[string]bool, src []string) []string {
	for _, s := range src {
		if !seen[s] {
			seen[s] = true
			dst = append(dst, s)
		}
	}
	return dst
}

// mergeStats merges Prometheus's query stats objects, keeping the first one's key order: numbers are summed
// (keys starting with "peak": the largest), arrays (per-step samples) concatenated, objects merged key by key.
func mergeStats(parts []json.RawMessage) (json.RawMessage, error) {
	var acc *jsonNode
	for _, p := range parts {
		n, err := parseJSONNode(p)
		if err != nil {
			return nil, errors.Wrap(err, "merge: decode query stats")
		}
		if acc == nil {
			acc = n
			continue
		}
		acc.merge(n, "")
	}
	var buf bytes.Buffer
	acc.write(&buf)
	return buf.Bytes(), nil
}

// jsonNode is a JSON value that keeps its object keys' order.
type jsonNode struct {
	keys   []string
	fields map[string]*jsonNode // object
	items  []json.RawMessage    // array
	num    *json.Number
	raw    json.RawMessage // anything else
}

func parseJSONNode(b []byte) (*jsonNode, error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '{':
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		n := &jsonNode{fields: map[string]*jsonNode{}}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := tok.(string)
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return nil, err
			}
			child, err := parseJSONNode(v)
			if err != nil {
				return nil, err
			}
			if _, dup := n.fields[key]; !dup {
				n.keys = append(n.keys, key)
			}
			n.fields[key] = child
		}
		return n, nil
	case len(b) > 0 && b[0] == '[':
		n := &jsonNode{items: []json.RawMessage{}}
		return n, json.Unmarshal(b, &n.items)
	default:
		var num json.Number
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&num); err == nil {
			return &jsonNode{num: &num}, nil
		}
		return &jsonNode{raw: bytes.Clone(b)}, nil
	}
}

func (n *jsonNode) merge(o *jsonNode, key string) {
	switch {
	case n.fields != nil && o.fields != nil:
		for _, k := range o.keys {
			if c, ok := n.fields[k]; ok {
				c.merge(o.fields[k], k)
			} else {
				n.keys = append(n.keys, k)
				n.fields[k] = o.fields[k]
			}
		}
	case n.items != nil && o.items != nil:
		n.items = append(n.items, o.items...)
	case n.num != nil && o.num != nil:
		a, errA := n.num.Float64()
		b, errB := o.num.Float64()
		if errA != nil || errB != nil {
			return
		}
		v := a + b
		if strings.HasPrefix(key, "peak") {
			v = max(a, b)
		}
		num := json.Number(formatNumber(v, n.num, o.num))
		n.num = &num
	}
}

// formatNumber writes v as an integer when both inputs were integers, else as a float.
func formatNumber(v float64, a, b *json.Number) string {
	if _, err := a.Int64(); err == nil {
		if _, err := b.Int64(); err == nil {
			out, _ := json.Marshal(int64(v))
			return string(out)
		}
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func (n *jsonNode) write(buf *bytes.Buffer) {
	switch {
	case n.fields != nil:
		buf.WriteByte('{')
		for i, k := range n.keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			kb, _ := json.Marshal(k)
			buf.Write(kb)
			buf.WriteByte(':')
			n.fields[k].write(buf)
		}
		buf.WriteByte('}')
	case n.items != nil:
		b, _ := json.Marshal(n.items)
		buf.Write(b)
	case n.num != nil:
		buf.WriteString(n.num.String())
	default:
		buf.Write(n.raw)
	}
}
