package receive

import (
	"testing"
	"github.com/klauspost/compress/snappy"
	"github.com/stratametrics/strata/pkg/tenancy"
)

func BenchmarkTmpStages(b *testing.B) {
	body := benchBodyV1(b)
	raw, _ := snappy.Decode(nil, body)
	b.Run("snappy", func(b *testing.B) {
		buf := make([]byte, len(raw))
		for b.Loop() { snappy.Decode(buf, body) }
	})
	b.Run("count", func(b *testing.B) {
		for b.Loop() { countWriteV1(raw) }
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() { decodeWriteV1(raw) }
	})
	b.Run("decode+validate", func(b *testing.B) {
		l := tenancy.DefaultLimits()
		v := newSeriesValidator(&l, testNow)
		for b.Loop() {
			ss, _ := decodeWriteV1(raw)
			for _, s := range ss { v.check(s) }
		}
	})
}
