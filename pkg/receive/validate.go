package receive

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/stratametrics/strata/pkg/store/labelpb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// seriesValidator checks series against one tenant's limits at one instant (DESIGN.md §9). A limit of 0 means
// "no limit". It holds no state besides the limits, so one request may share it between goroutines.
type seriesValidator struct {
	maxLabelNames  int
	maxNameLength  int
	maxValueLength int
	// maxTimestampMs is now + creation_grace_period: newer samples are "too far in the future".
	maxTimestampMs int64
}

func newSeriesValidator(l *tenancy.Limits, now time.Time) seriesValidator {
	return seriesValidator{
		maxLabelNames:  l.MaxLabelNamesPerSeries,
		maxNameLength:  l.MaxLabelNameLength,
		maxValueLength: l.MaxLabelValueLength,
		maxTimestampMs: now.Add(time.Duration(l.CreationGracePeriod)).UnixMilli(),
	}
}

// violation says why a series is invalid. Its zero value means the series is valid.
type violation struct {
	reason string // one of the Reason constants; "" when valid
	label  int    // index into the series' labels of the label the rule names
	tsMs   int64  // the timestamp that is too far in the future
	// changed: normalising changed the series (labels dropped or sorted, exemplars dropped): it is no longer
	// what its bytes as received say. labelsChanged: its labels are not (dropped or sorted).
	changed, labelsChanged bool
}

// check normalises ts in place and reports the first rule it breaks (and, for a valid series, whether
// normalising changed it), without allocating.
//
// Normalising: labels with an empty value are removed (in Prometheus an empty value is the same as no label);
// labels not sorted by name are sorted, as Mimir's distributor does (clients such as Mimir's own continuous
// test send `__name__, series_id, …`), which costs nothing for a series that is already sorted; and exemplars
// newer than now + creation_grace_period are removed (an exemplar is not a sample: it is dropped without
// failing its series, as Mimir does).
//
// The rules, in the order they are reported when several are broken (Mimir's order):
//  1. there is a __name__ label (a series left with no labels has none): ReasonMissingMetricName;
//  2. the metric name follows the legacy rules [a-zA-Z_:][a-zA-Z0-9_:]*: ReasonLabelInvalid;
//  3. at most max_label_names_per_series labels: ReasonMaxLabelNamesPerSeries;
//  4. for each label in (sorted) order: its name follows the legacy rules [a-zA-Z_][a-zA-Z0-9_]*
//     (ReasonLabelInvalid), is at most max_label_name_length bytes (ReasonLabelNameTooLong), its value at most
//     max_label_value_length bytes (ReasonLabelValueTooLong), and its name differs from the previous one
//     (ReasonDuplicateLabelNames);
//  5. no sample or histogram is newer than now + creation_grace_period: ReasonTooFarInFuture.
//
// Label values are valid UTF-8 by the time check runs: the decoders refuse requests where they are not.
func (v seriesValidator) check(ts *prompb.TimeSeries) violation {
	vi := v.checkLabels(ts)
	if vi.reason != "" {
		return vi
	}
	si := v.checkSamples(ts)
	si.changed = si.changed || vi.changed
	si.labelsChanged = vi.labelsChanged
	return si
}

// checkLabels is check's part for the labels: rules 1 to 4.
func (v seriesValidator) checkLabels(ts *prompb.TimeSeries) (vi violation) {
	// Drop the labels without a value, and check the others as they come while they are sorted (the rule for
	// every encoder: one pass); labels found out of order are sorted and checked again.
	ls := ts.Labels
	sorted := true
	j := 0 // labels kept: those with a value
	nameIdx := -1
	var first violation // the first per-label violation, reported after the series-level rules
	for _, l := range ls {
		if l.GetValue() == "" {
			continue
		}
		if sorted && j > 0 && l.GetName() < ls[j-1].GetName() {
			sorted = false
		}
		ls[j] = l
		if sorted {
			v.checkLabel(ls, j, &nameIdx, &first)
		}
		j++
	}
	changed := j != len(ls) || !sorted
	clear(ls[j:])
	ls = ls[:j]
	ts.Labels = ls
	if !sorted {
		// Stable: of two labels with the same name (a violation), the error names them in the order sent.
		slices.SortStableFunc(ls, compareLabelNames)
		nameIdx, first = -1, violation{}
		for i := range ls {
			v.checkLabel(ls, i, &nameIdx, &first)
		}
	}

	switch {
	case nameIdx < 0:
		return violation{reason: ReasonMissingMetricName}
	case !isLegacyMetricName(ls[nameIdx].GetValue()):
		return violation{reason: ReasonLabelInvalid, label: nameIdx}
	case v.maxLabelNames > 0 && len(ls) > v.maxLabelNames:
		return violation{reason: ReasonMaxLabelNamesPerSeries}
	case first.reason != "":
		return first
	}
	return violation{changed: changed, labelsChanged: changed}
}

// checkSamples is check's part for the samples, histograms and exemplars: rule 5, and the exemplars dropped.
// On its own it checks a series whose labels are known to pass checkLabels unchanged (seriesRefs).
func (v seriesValidator) checkSamples(ts *prompb.TimeSeries) (vi violation) {
	if n := len(ts.Exemplars); n > 0 {
		ts.Exemplars = v.dropFutureExemplars(ts.Exemplars)
		vi.changed = len(ts.Exemplars) != n
	}
	for _, s := range ts.Samples {
		if t := s.GetTimestamp(); t > v.maxTimestampMs {
			return violation{reason: ReasonTooFarInFuture, tsMs: t}
		}
	}
	for _, h := range ts.Histograms {
		if t := h.GetTimestamp(); t > v.maxTimestampMs {
			return violation{reason: ReasonTooFarInFuture, tsMs: t}
		}
	}
	return vi
}

// labelLimits are the limits checkLabels applies.
func (v seriesValidator) labelLimits() [3]int {
	return [3]int{v.maxLabelNames, v.maxNameLength, v.maxValueLength}
}

// checkLabel checks label i of ls, sorted up to i: it records the metric name's index in nameIdx, and the
// first violation in first.
func (v seriesValidator) checkLabel(ls []*labelpb.Label, i int, nameIdx *int, first *violation) {
	name := ls[i].GetName()
	if *nameIdx < 0 && name == model.MetricNameLabel {
		*nameIdx = i
	}
	if first.reason != "" {
		return
	}
	switch {
	case !isLegacyLabelName(name):
		*first = violation{reason: ReasonLabelInvalid, label: i}
	case v.maxNameLength > 0 && len(name) > v.maxNameLength:
		*first = violation{reason: ReasonLabelNameTooLong, label: i}
	case v.maxValueLength > 0 && len(ls[i].GetValue()) > v.maxValueLength:
		*first = violation{reason: ReasonLabelValueTooLong, label: i}
	case i > 0 && name == ls[i-1].GetName():
		*first = violation{reason: ReasonDuplicateLabelNames, label: i}
	}
}

// err returns the Mimir-format error for violation vi of ts, as check reported it. It allocates; callers build
// it for the error they answer with only.
func (v seriesValidator) err(ts *prompb.TimeSeries, vi violation) *tenancy.Error {
	series := formatSeries(ts.Labels)
	var name, value string
	if vi.label >= 0 && vi.label < len(ts.Labels) {
		name, value = ts.Labels[vi.label].GetName(), ts.Labels[vi.label].GetValue()
	}
	switch vi.reason {
	case ReasonMissingMetricName:
		return tenancy.NewMissingMetricNameError(series)
	case ReasonLabelInvalid:
		return tenancy.NewLabelInvalidError(name, series)
	case ReasonMaxLabelNamesPerSeries:
		return tenancy.NewMaxLabelNamesPerSeriesError(len(ts.Labels), v.maxLabelNames, series)
	case ReasonLabelNameTooLong:
		return tenancy.NewLabelNameTooLongError(name, series, v.maxNameLength)
	case ReasonLabelValueTooLong:
		return tenancy.NewLabelValueTooLongError(name, value, series, v.maxValueLength)
	case ReasonDuplicateLabelNames:
		return tenancy.NewDuplicateLabelNamesError(name, series)
	case ReasonTooFarInFuture:
		return tenancy.NewTooFarInFutureError(vi.tsMs, series)
	}
	return nil
}

// compareLabelNames orders labels by name.
func compareLabelNames(a, b *labelpb.Label) int { return strings.Compare(a.GetName(), b.GetName()) }

// legacyNameChars classifies bytes for isLegacyMetricName and isLegacyLabelName: one table lookup per byte
// instead of a chain of range tests (they run on every label of every series an ingester or distributor takes).
var legacyNameChars = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
			t[c] = legacyLabelFirst | legacyLabelRest | legacyMetricFirst | legacyMetricRest
		case c >= '0' && c <= '9':
			t[c] = legacyLabelRest | legacyMetricRest
		case c == ':':
			t[c] = legacyMetricFirst | legacyMetricRest
		}
	}
	return t
}()

const (
	legacyLabelFirst = 1 << iota
	legacyLabelRest
	legacyMetricFirst
	legacyMetricRest
)

// isLegacyMetricName reports whether name matches [a-zA-Z_:][a-zA-Z0-9_:]*, Prometheus's legacy metric names
// (model.LegacyValidation.IsValidMetricName, over bytes: only ASCII can match).
func isLegacyMetricName(name string) bool {
	return isLegacyName(name, legacyMetricFirst, legacyMetricRest)
}

// isLegacyLabelName reports whether name matches [a-zA-Z_][a-zA-Z0-9_]*, Prometheus's legacy label names
// (model.LegacyValidation.IsValidLabelName, over bytes rather than runes: only ASCII can match).
func isLegacyLabelName(name string) bool {
	return isLegacyName(name, legacyLabelFirst, legacyLabelRest)
}

// isLegacyName reports whether name is a byte of class first followed by bytes of class rest.
func isLegacyName(name string, first, rest uint8) bool {
	if name == "" || legacyNameChars[name[0]]&first == 0 {
		return false
	}
	for i := 1; i < len(name); i++ {
		if legacyNameChars[name[i]]&rest == 0 {
			return false
		}
	}
	return true
}

// dropFutureExemplars removes, in place, the exemplars newer than now + creation_grace_period (and nil entries).
func (v seriesValidator) dropFutureExemplars(es []*prompb.Exemplar) []*prompb.Exemplar {
	j := 0
	for _, e := range es {
		if e != nil && e.GetTimestamp() <= v.maxTimestampMs {
			es[j] = e
			j++
		}
	}
	clear(es[j:])
	return es[:j]
}

// formatSeries renders labels as Prometheus's labels.Labels.String does ({__name__="up", job="x"}), in the
// order given (a series that is not sorted is shown as sent). The error messages keep the first 200 characters
// only, so rendering stops after a few hundred bytes: a huge label value costs nothing here.
func formatSeries(ls []*labelpb.Label) string {
	const enough = 1024 // ≥ 200 runes of output whatever they are
	cut := func(s string) string {
		if len(s) > enough {
			return s[:enough]
		}
		return s
	}
	b := make([]byte, 0, 256)
	b = append(b, '{')
	for i, l := range ls {
		if len(b) >= enough {
			break
		}
		if i > 0 {
			b = append(b, ", "...)
		}
		if name := cut(l.GetName()); model.LegacyValidation.IsValidLabelName(name) {
			b = append(b, name...)
		} else {
			b = strconv.AppendQuote(b, name)
		}
		b = append(b, '=')
		b = strconv.AppendQuote(b, cut(l.GetValue()))
	}
	b = append(b, '}')
	return string(b)
}
