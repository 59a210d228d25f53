package receive

import (
	"math"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
	"github.com/stratametrics/strata/pkg/store/storepb/prompb/remotewrite"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Reasons metric metadata is discarded for, counted in strata_discarded_metadata_total (Mimir's reasons).
const (
	reasonMetadataMissingName    = "metadata_missing_metric_name"
	reasonMetadataNameInvalid    = "metadata_metric_name_invalid"
	reasonMetadataNameTooLong    = "metric_name_too_long"
	reasonMetadataUnitTooLong    = "unit_too_long"
	reasonMetadataPerUserLimit   = "per_user_metadata_limit"
	reasonMetadataPerMetricLimit = "per_metric_metadata_limit"
)

// DiscardedMetadata is strata_discarded_metadata_total{tenant,reason}: metric metadata dropped by a distributor
// (validation) or an ingester (validation, limits). Mimir's cortex_discarded_metadata_total.
type DiscardedMetadata struct{ c *prometheus.CounterVec }

// NewDiscardedMetadata registers the counter on reg, or shares the one already registered there: a distributor
// and an ingester in one process (strata all) count into the same series, as in Mimir.
func NewDiscardedMetadata(reg prometheus.Registerer) *DiscardedMetadata {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strata_discarded_metadata_total",
		Help: "Remote-written metric metadata entries dropped, by tenant and reason.",
	}, []string{"tenant", "reason"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			existing, ok := c, false
			if errors.As(err, &are) {
				existing, ok = are.ExistingCollector.(*prometheus.CounterVec)
			}
			if !ok {
				panic(errors.Wrap(err, "register strata_discarded_metadata_total")) // as promauto does
			}
			c = existing
		}
	}
	return &DiscardedMetadata{c: c}
}

// Add counts n entries of tenant dropped for reason.
func (d *DiscardedMetadata) Add(tenant, reason string, n int) {
	if d == nil || n == 0 {
		return
	}
	d.c.WithLabelValues(tenant, reason).Add(float64(n))
}

// metadataReceiver is the distributor's part of the metadata path: it decodes a request's metric metadata and
// validates it against the tenant's limits.
type metadataReceiver struct {
	overrides *tenancy.Overrides
	discarded *DiscardedMetadata
}

func newMetadataReceiver(overrides *tenancy.Overrides, reg prometheus.Registerer) *metadataReceiver {
	return &metadataReceiver{overrides: overrides, discarded: NewDiscardedMetadata(reg)}
}

// take decodes the metric metadata of a decompressed remote write body of message p and keeps the valid entries:
// it returns them, the first invalid entry's error (the request is then answered 400 after the valid data is
// written, as for series), or an error when the body is malformed. The result shares nothing with buf.
func (m *metadataReceiver) take(tenant string, p writeProto, buf []byte) ([]*prompb.MetricMetadata, *tenancy.Error, error) {
	md, err := decodeMetadata(p, buf)
	if err != nil || len(md) == 0 {
		return nil, nil, err
	}
	valid, firstErr := validateMetadata(m.overrides.ForTenant(tenant), md, func(reason string) { m.discarded.Add(tenant, reason, 1) })
	return dedupMetadata(valid), firstErr, nil
}

// dedupMetadata drops repeated entries, in place: the ingesters would keep one anyway, and a request that
// repeats one entry so costs the ring nothing.
func dedupMetadata(md []*prompb.MetricMetadata) []*prompb.MetricMetadata {
	if len(md) < 2 {
		return md
	}
	type key struct {
		typ                prompb.MetricMetadata_MetricType
		family, help, unit string
	}
	seen := make(map[key]struct{}, len(md))
	out := md[:0]
	for _, e := range md {
		k := key{e.GetType(), e.GetMetricFamilyName(), e.GetHelp(), e.GetUnit()}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, e)
	}
	clear(md[len(out):])
	return out
}

// validateMetadata keeps the entries of md that are valid under l, in place, as Mimir's distributor does: a
// metric family name is required, must be a valid metric name and at most max_metadata_length bytes long, as
// must the unit; a longer help text is truncated to max_metadata_length bytes (at a UTF-8 boundary). It
// returns the kept entries and the error of the first dropped one; drop is called with the reason of each.
func validateMetadata(l *tenancy.Limits, md []*prompb.MetricMetadata, drop func(reason string)) ([]*prompb.MetricMetadata, *tenancy.Error) {
	var (
		firstErr *tenancy.Error
		kept     = md[:0]
		maxLen   = l.MaxMetadataLength
	)
	for _, e := range md {
		if e == nil {
			continue
		}
		if reason, err := checkMetadata(l, e); err != nil {
			drop(reason)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if maxLen > 0 && len(e.Help) > maxLen {
			e.Help = truncateUTF8(e.Help, maxLen)
		}
		kept = append(kept, e)
	}
	clear(md[len(kept):])
	return kept, firstErr
}

// checkMetadata returns the error of an invalid metadata entry under l, with the reason it is discarded for.
func checkMetadata(l *tenancy.Limits, e *prompb.MetricMetadata) (reason string, err *tenancy.Error) {
	name, maxLen := e.GetMetricFamilyName(), l.MaxMetadataLength
	switch {
	case name == "":
		return reasonMetadataMissingName, tenancy.NewMetadataMissingMetricNameError()
	case maxLen > 0 && len(name) > maxLen:
		return reasonMetadataNameTooLong, tenancy.NewMetadataMetricNameTooLongError(name, maxLen)
	case !isLegacyMetricName(name):
		return reasonMetadataNameInvalid, tenancy.NewMetadataMetricNameInvalidError(name)
	case maxLen > 0 && len(e.GetUnit()) > maxLen:
		return reasonMetadataUnitTooLong, tenancy.NewMetadataUnitTooLongError(name, e.GetUnit(), maxLen)
	}
	return "", nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// MetadataShardKey is the ring token of a tenant's metric family's metadata: xxhash over the tenant and the
// family name (Mimir's ShardByMetricName), so every distributor sends a family's metadata to the same ingesters.
func MetadataShardKey(tenant, family string) uint32 {
	var arr [512]byte
	b := append(arr[:0], tenant...)
	b = append(b, 0xff)
	b = append(b, family...)
	b = append(b, 0xff)
	sum := xxhash.Sum64(b)
	return uint32(sum) ^ uint32(sum>>32)
}

// appendMetadataKeys appends the ring tokens of md to keys (see MetadataShardKey).
func appendMetadataKeys(keys []uint32, tenant string, md []*prompb.MetricMetadata) []uint32 {
	for _, m := range md {
		keys = append(keys, MetadataShardKey(tenant, m.GetMetricFamilyName()))
	}
	return keys
}

// decodeMetadata returns the metric metadata of a decompressed remote write body of message p: 1.0's
// WriteRequest.metadata (field 3), or 2.0's per-series TimeSeries.metadata (type, help and unit references),
// whose metric family is the series' __name__ (less the _bucket, _count and _sum suffixes of classic histograms
// and summaries); 2.0 entries equal in all four fields are returned once. It reads only the fields it needs
// (framing is checked by decodeWrite) and copies the strings it returns: the result shares nothing with buf, and
// holds at most the bytes of the metadata it returns.
func decodeMetadata(p writeProto, buf []byte) ([]*prompb.MetricMetadata, error) {
	if p == writeV2 {
		return decodeMetadataV2(buf)
	}
	return decodeMetadataV1(buf)
}

func decodeMetadataV1(buf []byte) ([]*prompb.MetricMetadata, error) {
	// First pass: check every entry, count those with a name and their bytes. Nameless entries, which validation
	// refuses anyway, are returned as one entry: a body of empty entries allocates nothing per entry.
	var (
		n, size  int
		nameless bool
		m        prompb.MetricMetadata
	)
	err := forEachBytesField(buf, 3, "remote write 1.0 request", func(v []byte) error {
		m = prompb.MetricMetadata{}
		if err := decodeMetricMetadataV1(v, "", &m); err != nil {
			return errors.Wrapf(err, "metadata %d", n)
		}
		if m.MetricFamilyName == "" {
			nameless = true
			return nil
		}
		n++
		size += len(v)
		return nil
	})
	if err != nil {
		return nil, errors.Wrap(err, "decode remote write 1.0 request")
	}
	if nameless {
		n++
	}
	if n == 0 {
		return nil, nil
	}
	// Second pass: one slab for the messages, and their strings are substrings of one copy of the entries' bytes.
	// An entry costs its message and a pointer, ~100 bytes for at least 5 on the wire.
	var (
		slab  = make([]prompb.MetricMetadata, n)
		out   = make([]*prompb.MetricMetadata, 0, n)
		arena = make([]byte, 0, size)
	)
	_ = forEachBytesField(buf, 3, "", func(v []byte) error {
		arena = append(arena, v...)
		return nil
	})
	all, off := string(arena), 0
	arena = nil
	if nameless {
		out = append(out, &slab[0]) // the nameless entry
	}
	_ = forEachBytesField(buf, 3, "", func(v []byte) error {
		str := all[off : off+len(v)]
		off += len(v)
		var e prompb.MetricMetadata
		_ = decodeMetricMetadataV1(v, str, &e) // checked by the first pass
		if e.MetricFamilyName == "" {
			return nil
		}
		m := &slab[len(out)]
		m.Type, m.MetricFamilyName, m.Help, m.Unit = e.Type, e.MetricFamilyName, e.Help, e.Unit
		out = append(out, m)
		return nil
	})
	return out, nil
}

// decodeMetricMetadataV1 decodes a prometheus.MetricMetadata (type 1, metric_family_name 2, help 4, unit 5) into
// m. When str holds the same bytes as b, as a string, the strings are substrings of it; when it is empty they
// are not set (a check of b, which allocates nothing) but for whether the name is empty.
func decodeMetricMetadataV1(b []byte, str string, m *prompb.MetricMetadata) error {
	whole := len(b)
	for len(b) > 0 {
		num, typ, n := remotewrite.ConsumeTag(b)
		if n < 0 {
			return remotewrite.WireError(n, "metadata")
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			m.Type = prompb.MetricMetadata_MetricType(int32(v))
		case (num == 2 || num == 4 || num == 5) && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				if !utf8.Valid(v) {
					return errors.Newf("metadata field %d is not valid UTF-8", num)
				}
				var sv string
				switch start := whole - len(b) + n - len(v); {
				case str != "":
					sv = str[start : start+len(v)]
				case len(v) > 0:
					sv = "x" // presence only
				}
				switch num {
				case 2:
					m.MetricFamilyName = sv
				case 4:
					m.Help = sv
				case 5:
					m.Unit = sv
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return remotewrite.WireError(n, "metadata")
		}
		b = b[n:]
	}
	return nil
}

// v2Metadata is a 2.0 series' metadata before its symbol references are resolved.
type v2Metadata struct {
	typ        prompb.MetricMetadata_MetricType
	help, unit uint32
}

// forEachTimeSeriesV2 calls f with the bytes of each TimeSeries (field 5) of a 2.0 Request.
func forEachTimeSeriesV2(buf []byte, f func(ts []byte) error) error {
	return forEachBytesField(buf, 5, "remote write 2.0 request", f)
}

// forEachBytesField calls f with the value of each length-delimited field num of the message b.
func forEachBytesField(b []byte, num protowire.Number, what string, f func(v []byte) error) error {
	for len(b) > 0 {
		n, typ, l := remotewrite.ConsumeTag(b)
		if l < 0 {
			return remotewrite.WireError(l, what)
		}
		b = b[l:]
		if n != num || typ != protowire.BytesType {
			if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
				return remotewrite.WireError(l, what)
			}
			b = b[l:]
			continue
		}
		v, l := protowire.ConsumeBytes(b)
		if l < 0 {
			return remotewrite.WireError(l, what)
		}
		b = b[l:]
		if err := f(v); err != nil {
			return err
		}
	}
	return nil
}

// decodeMetadataV2 reads the per-series metadata of a 2.0 Request in three passes over its fields, so that its
// memory stays a small multiple of the request's size and a request without metadata allocates nothing: which
// series carry metadata; the offsets of the symbols (8 bytes per symbol, which takes at least 2 bytes on the
// wire); the metadata of those series, resolved and deduplicated as it is read.
func decodeMetadataV2(buf []byte) ([]*prompb.MetricMetadata, error) {
	found := false
	err := forEachTimeSeriesV2(buf, func(ts []byte) error {
		if found {
			return nil
		}
		_, ok, err := scanSeriesMetadataV2(ts)
		found = ok
		return err
	})
	if err != nil || !found {
		return nil, err
	}

	type span struct{ off, n uint32 }
	var syms []span
	if err := forEachBytesField(buf, 4, "remote write 2.0 request", func(v []byte) error {
		syms = append(syms, span{off: uint32(cap(buf) - cap(v)), n: uint32(len(v))}) // v is a window of buf
		return nil
	}); err != nil {
		return nil, err
	}
	symbol := func(ref uint32) ([]byte, error) {
		if int(ref) >= len(syms) {
			return nil, errors.Newf("symbol reference %d out of range: the request has %d symbols", ref, len(syms))
		}
		v := buf[syms[ref].off : syms[ref].off+syms[ref].n]
		if !utf8.Valid(v) {
			return nil, errors.Newf("symbol %d is not valid UTF-8", ref)
		}
		return v, nil
	}

	type refKey struct {
		typ              prompb.MetricMetadata_MetricType
		name, help, unit uint32
	}
	type key struct {
		family, help, unit string
		typ                prompb.MetricMetadata_MetricType
	}
	var (
		seenRefs = map[refKey]bool{}
		seen     = map[key]bool{}
		out      []*prompb.MetricMetadata
		i        = -1
	)
	err = forEachTimeSeriesV2(buf, func(ts []byte) error {
		i++
		md, ok, err := scanSeriesMetadataV2(ts)
		if err != nil || !ok {
			return err
		}
		help, err := symbol(md.help)
		if err != nil {
			return errors.Wrapf(err, "timeseries %d: metadata help", i)
		}
		unit, err := symbol(md.unit)
		if err != nil {
			return errors.Wrapf(err, "timeseries %d: metadata unit", i)
		}
		nameRef, hasName := uint32(0), false
		err = forEachLabelRefPairV2(ts, func(n, v uint32) error {
			name, err := symbol(n)
			if err != nil {
				return err
			}
			if _, err := symbol(v); err != nil {
				return err
			}
			if string(name) == model.MetricNameLabel {
				nameRef, hasName = v, true
			}
			return nil
		})
		if err != nil {
			return errors.Wrapf(err, "timeseries %d: labels", i)
		}
		rk := refKey{typ: md.typ, name: nameRef, help: md.help, unit: md.unit}
		if !hasName {
			rk.name = math.MaxUint32
		}
		if seenRefs[rk] {
			return nil
		}
		seenRefs[rk] = true
		family := ""
		if hasName {
			v, _ := symbol(nameRef)
			family = metricFamilyName(string(v), md.typ)
		}
		k := key{family: family, help: string(help), unit: string(unit), typ: md.typ}
		if seen[k] {
			return nil
		}
		seen[k] = true
		out = append(out, &prompb.MetricMetadata{Type: k.typ, MetricFamilyName: k.family, Help: k.help, Unit: k.unit})
		return nil
	})
	if err != nil {
		return nil, errors.Wrap(err, "decode remote write 2.0 request")
	}
	return out, nil
}

// forEachLabelRefPairV2 calls f with each (name, value) pair of a 2.0 TimeSeries' labels_refs (field 1, packed
// or not). An odd trailing reference is an error.
func forEachLabelRefPairV2(ts []byte, f func(name, value uint32) error) error {
	var (
		pending uint32
		odd     bool
	)
	add := func(ref uint32) error {
		if !odd {
			pending, odd = ref, true
			return nil
		}
		odd = false
		return f(pending, ref)
	}
	for b := ts; len(b) > 0; {
		num, typ, n := remotewrite.ConsumeTag(b)
		if n < 0 {
			return remotewrite.WireError(n, "timeseries")
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return remotewrite.WireError(n, "timeseries")
			}
			b = b[n:]
			for len(v) > 0 {
				r, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return remotewrite.WireError(m, "timeseries labels_refs")
				}
				v = v[m:]
				if err := add(uint32(r)); err != nil {
					return err
				}
			}
		case num == 1 && typ == protowire.VarintType:
			r, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return remotewrite.WireError(n, "timeseries")
			}
			b = b[n:]
			if err := add(uint32(r)); err != nil {
				return err
			}
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return remotewrite.WireError(n, "timeseries")
			}
			b = b[n:]
		}
	}
	if odd {
		return errors.New("odd number of label references")
	}
	return nil
}

// scanSeriesMetadataV2 reads the metadata (field 5) of a 2.0 TimeSeries; ok is false when it carries none (no
// type, help or unit).
func scanSeriesMetadataV2(b []byte) (md v2Metadata, ok bool, err error) {
	err = forEachBytesField(b, 5, "timeseries", func(v []byte) error {
		if err := decodeMetadataV2Message(v, &md); err != nil {
			return err
		}
		ok = md.typ != 0 || md.help != 0 || md.unit != 0
		return nil
	})
	return md, ok && err == nil, err
}

// decodeMetadataV2Message decodes an io.prometheus.write.v2.Metadata (type 1, help_ref 3, unit_ref 4).
func decodeMetadataV2Message(b []byte, md *v2Metadata) error {
	for len(b) > 0 {
		num, typ, n := remotewrite.ConsumeTag(b)
		if n < 0 {
			return remotewrite.WireError(n, "metadata")
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 3 || num == 4) {
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			switch num {
			case 1:
				// The 2.0 enum has the same numbers as prometheus.MetricMetadata.MetricType (UNSPECIFIED = UNKNOWN).
				md.typ = prompb.MetricMetadata_MetricType(int32(v))
			case 3:
				md.help = uint32(v)
			case 4:
				md.unit = uint32(v)
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return remotewrite.WireError(n, "metadata")
		}
		b = b[n:]
	}
	return nil
}

// metricFamilyName is the family a series of a metric type belongs to: the series name less the suffix a
// classic histogram's or summary's series add (what 1.0 metadata names).
func metricFamilyName(series string, typ prompb.MetricMetadata_MetricType) string {
	var suffixes []string
	switch typ {
	case prompb.MetricMetadata_HISTOGRAM:
		suffixes = []string{"_bucket", "_count", "_sum"}
	case prompb.MetricMetadata_GAUGEHISTOGRAM:
		suffixes = []string{"_bucket", "_gcount", "_gsum"}
	case prompb.MetricMetadata_SUMMARY:
		suffixes = []string{"_count", "_sum"}
	}
	for _, s := range suffixes {
		if f, ok := strings.CutSuffix(series, s); ok && f != "" {
			return f
		}
	}
	return series
}
