package receive

import (
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stratametrics/strata/pkg/store/storepb/prompb"
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
	return valid, firstErr, nil
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
	var out []*prompb.MetricMetadata
	for b := buf; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, wireError(n, "remote write 1.0 request")
		}
		b = b[n:]
		if num != 3 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, wireError(n, "remote write 1.0 request")
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, wireError(n, "remote write 1.0 request")
		}
		b = b[n:]
		m, err := decodeMetricMetadataV1(v)
		if err != nil {
			return nil, errors.Wrapf(err, "decode remote write 1.0 request: metadata %d", len(out))
		}
		out = append(out, m)
	}
	return out, nil
}

// decodeMetricMetadataV1 decodes a prometheus.MetricMetadata (type 1, metric_family_name 2, help 4, unit 5).
func decodeMetricMetadataV1(b []byte) (*prompb.MetricMetadata, error) {
	m := &prompb.MetricMetadata{}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, wireError(n, "metadata")
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
					return nil, errors.Newf("metadata field %d is not valid UTF-8", num)
				}
				switch num {
				case 2:
					m.MetricFamilyName = string(v)
				case 4:
					m.Help = string(v)
				case 5:
					m.Unit = string(v)
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, wireError(n, "metadata")
		}
		b = b[n:]
	}
	return m, nil
}

// v2Metadata is a 2.0 series' metadata before its symbol references are resolved.
type v2Metadata struct {
	typ        prompb.MetricMetadata_MetricType
	help, unit uint32
	labelRefs  []uint32
}

// decodeMetadataV2 finds the series that carry metadata in a first pass, then resolves the symbols they refer
// to in a second one: a request without metadata costs one scan of its series' fields and no allocation.
func decodeMetadataV2(buf []byte) ([]*prompb.MetricMetadata, error) {
	var found []v2Metadata
	for b := buf; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, wireError(n, "remote write 2.0 request")
		}
		b = b[n:]
		if num != 5 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, wireError(n, "remote write 2.0 request")
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, wireError(n, "remote write 2.0 request")
		}
		b = b[n:]
		md, ok, err := scanSeriesMetadataV2(v)
		if err != nil {
			return nil, errors.Wrap(err, "decode remote write 2.0 request: timeseries")
		}
		if ok {
			found = append(found, md)
		}
	}
	if len(found) == 0 {
		return nil, nil
	}

	// The symbols the metadata refers to: help, unit and the series' label names and values.
	need := map[uint32]string{}
	for i := range found {
		need[found[i].help], need[found[i].unit] = "", ""
		for _, r := range found[i].labelRefs {
			need[r] = ""
		}
	}
	var nsyms uint32
	for b := buf; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, wireError(n, "remote write 2.0 request")
		}
		b = b[n:]
		if num != 4 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, wireError(n, "remote write 2.0 request")
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, wireError(n, "remote write 2.0 request")
		}
		b = b[n:]
		if _, ok := need[nsyms]; ok {
			if !utf8.Valid(v) {
				return nil, errors.Newf("decode remote write 2.0 request: symbol %d is not valid UTF-8", nsyms)
			}
			need[nsyms] = string(v)
		}
		nsyms++
	}

	type key struct {
		family, help, unit string
		typ                prompb.MetricMetadata_MetricType
	}
	seen := map[key]bool{}
	var out []*prompb.MetricMetadata
	for i := range found {
		f := &found[i]
		if f.help >= nsyms || f.unit >= nsyms {
			return nil, errors.Newf("decode remote write 2.0 request: metadata reference (help %d, unit %d) out of range: the request has %d symbols", f.help, f.unit, nsyms)
		}
		name := ""
		for j := 0; j+1 < len(f.labelRefs); j += 2 {
			if f.labelRefs[j] >= nsyms || f.labelRefs[j+1] >= nsyms {
				return nil, errors.Newf("decode remote write 2.0 request: label reference (%d, %d) out of range: the request has %d symbols", f.labelRefs[j], f.labelRefs[j+1], nsyms)
			}
			if need[f.labelRefs[j]] == model.MetricNameLabel {
				name = need[f.labelRefs[j+1]]
			}
		}
		k := key{family: metricFamilyName(name, f.typ), help: need[f.help], unit: need[f.unit], typ: f.typ}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, &prompb.MetricMetadata{Type: k.typ, MetricFamilyName: k.family, Help: k.help, Unit: k.unit})
	}
	return out, nil
}

// scanSeriesMetadataV2 reads the metadata (field 5) and label references (field 1) of a 2.0 TimeSeries; ok is
// false when it carries no metadata (no type, help or unit).
func scanSeriesMetadataV2(b []byte) (md v2Metadata, ok bool, err error) {
	var (
		partsArr [2][]byte
		parts    = partsArr[:0] // packed labels_refs (one field, as encoders write it), decoded only with metadata
		unpacked []uint32
	)
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return md, false, wireError(n, "timeseries")
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			parts = append(parts, v)
		case num == 1 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			unpacked = append(unpacked, uint32(v))
		case num == 5 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				if err := decodeMetadataV2Message(v, &md); err != nil {
					return md, false, err
				}
				ok = md.typ != 0 || md.help != 0 || md.unit != 0
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return md, false, wireError(n, "timeseries")
		}
		b = b[n:]
	}
	if !ok {
		return md, false, nil
	}
	for _, refs := range parts {
		for len(refs) > 0 {
			v, n := protowire.ConsumeVarint(refs)
			if n < 0 {
				return md, false, wireError(n, "timeseries labels_refs")
			}
			unpacked = append(unpacked, uint32(v))
			refs = refs[n:]
		}
	}
	md.labelRefs = unpacked
	return md, true, nil
}

// decodeMetadataV2Message decodes an io.prometheus.write.v2.Metadata (type 1, help_ref 3, unit_ref 4).
func decodeMetadataV2Message(b []byte, md *v2Metadata) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return wireError(n, "metadata")
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
			return wireError(n, "metadata")
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
