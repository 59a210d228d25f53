package storepb_test

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/efficientgo/core/errors"
	"github.com/efficientgo/core/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// field is one protobuf field as it must appear on the wire. Expectations are
// written by hand from Thanos' .proto files (field name, number, wire type
// and value); they are deliberately not derived from the generated
// descriptors, so that a wrong number or type in our .proto files fails the
// tests.
type field struct {
	name string // Proto field name in Thanos' .proto.
	num  protowire.Number
	typ  protowire.Type
	u64  uint64  // Varint, Fixed64 and Fixed32 payloads.
	raw  []byte  // Bytes payload (strings, bytes, packed scalars) when !msg.
	msg  bool    // Bytes payload is a nested message described by sub.
	sub  []field // Fields of the nested message.
}

// vInt is an int32/int64/enum field (two's complement varint).
func vInt(name string, num protowire.Number, v int64) field {
	return field{name: name, num: num, typ: protowire.VarintType, u64: uint64(v)}
}

// vUint is a uint32/uint64 field.
func vUint(name string, num protowire.Number, v uint64) field {
	return field{name: name, num: num, typ: protowire.VarintType, u64: v}
}

// vBool is a bool field set to true.
func vBool(name string, num protowire.Number) field {
	return field{name: name, num: num, typ: protowire.VarintType, u64: 1}
}

// vSint is a sint32/sint64 field (zigzag varint).
func vSint(name string, num protowire.Number, v int64) field {
	return field{name: name, num: num, typ: protowire.VarintType, u64: protowire.EncodeZigZag(v)}
}

// vDouble is a double field (fixed64).
func vDouble(name string, num protowire.Number, v float64) field {
	return field{name: name, num: num, typ: protowire.Fixed64Type, u64: math.Float64bits(v)}
}

// vStr is a string field.
func vStr(name string, num protowire.Number, v string) field {
	return field{name: name, num: num, typ: protowire.BytesType, raw: []byte(v)}
}

// vBytes is a bytes field.
func vBytes(name string, num protowire.Number, v []byte) field {
	return field{name: name, num: num, typ: protowire.BytesType, raw: v}
}

// vMsg is a message field with the given fields.
func vMsg(name string, num protowire.Number, sub ...field) field {
	return field{name: name, num: num, typ: protowire.BytesType, msg: true, sub: sub}
}

// vPackedVarint is a packed repeated uint32/uint64/int32/int64/enum field.
func vPackedVarint(name string, num protowire.Number, vs ...uint64) field {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendVarint(b, v)
	}
	return vBytes(name, num, b)
}

// vPackedSint is a packed repeated sint32/sint64 field.
func vPackedSint(name string, num protowire.Number, vs ...int64) field {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(v))
	}
	return vBytes(name, num, b)
}

// vPackedDouble is a packed repeated double field.
func vPackedDouble(name string, num protowire.Number, vs ...float64) field {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendFixed64(b, math.Float64bits(v))
	}
	return vBytes(name, num, b)
}

// sortedFields orders fields by number, keeping the order of repeated
// elements (protobuf encoders emit fields in ascending number order).
func sortedFields(fs []field) []field {
	out := slices.Clone(fs)
	slices.SortStableFunc(out, func(a, b field) int { return int(a.num) - int(b.num) })
	return out
}

// encodeFields hand-encodes fields with protowire, in ascending field number
// order as protobuf encoders (gogo's and protobuf-go's) do.
func encodeFields(fs []field) []byte {
	var b []byte
	for _, f := range sortedFields(fs) {
		b = protowire.AppendTag(b, f.num, f.typ)
		switch f.typ {
		case protowire.VarintType:
			b = protowire.AppendVarint(b, f.u64)
		case protowire.Fixed64Type:
			b = protowire.AppendFixed64(b, f.u64)
		case protowire.Fixed32Type:
			b = protowire.AppendFixed32(b, uint32(f.u64))
		case protowire.BytesType:
			if f.msg {
				b = protowire.AppendBytes(b, encodeFields(f.sub))
			} else {
				b = protowire.AppendBytes(b, f.raw)
			}
		default:
			panic(fmt.Sprintf("unsupported wire type %d", f.typ))
		}
	}
	return b
}

// parsedField is one field decoded from the wire without any schema.
type parsedField struct {
	num protowire.Number
	typ protowire.Type
	u64 uint64
	raw []byte
}

// parseWire splits b into its top-level fields using protowire only.
func parseWire(b []byte) ([]parsedField, error) {
	var out []parsedField
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errors.Wrap(protowire.ParseError(n), "tag")
		}
		b = b[n:]
		f := parsedField{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.u64, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			f.u64, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.u64 = uint64(v)
		case protowire.BytesType:
			f.raw, n = protowire.ConsumeBytes(b)
		default:
			return nil, errors.Newf("field %d: unexpected wire type %d", num, typ)
		}
		if n < 0 {
			return nil, errors.Wrapf(protowire.ParseError(n), "field %d", num)
		}
		b = b[n:]
		out = append(out, f)
	}
	return out, nil
}

func describeParsed(fs []parsedField) string {
	var s string
	for _, f := range fs {
		s += fmt.Sprintf("[%d/%d]", f.num, f.typ)
	}
	return s
}

// requireWire decodes b field by field and checks it against want: same
// fields, numbers, wire types, values and order of repeated elements.
func requireWire(t testing.TB, path string, b []byte, want []field) {
	t.Helper()
	got, err := parseWire(b)
	testutil.Ok(t, err, "%s: parse", path)
	slices.SortStableFunc(got, func(a, b parsedField) int { return int(a.num) - int(b.num) })
	want = sortedFields(want)
	testutil.Equals(t, len(want), len(got), "%s: field count; decoded %s", path, describeParsed(got))
	for i, w := range want {
		g := got[i]
		p := fmt.Sprintf("%s.%s(%d)", path, w.name, w.num)
		testutil.Equals(t, w.num, g.num, "%s: field number", p)
		testutil.Equals(t, w.typ, g.typ, "%s: wire type", p)
		switch {
		case w.typ == protowire.BytesType && w.msg:
			requireWire(t, p, g.raw, w.sub)
		case w.typ == protowire.BytesType:
			testutil.Assert(t, bytes.Equal(w.raw, g.raw), "%s: bytes %x, want %x", p, g.raw, w.raw)
		default:
			testutil.Equals(t, w.u64, g.u64, "%s: value", p)
		}
	}
}

// requireSchema checks that every expected field exists under that name in
// the message descriptor with the expected number (recursively for nested
// messages). It catches fields that are renumbered or missing in our .proto.
func requireSchema(t testing.TB, path string, md protoreflect.MessageDescriptor, want []field) {
	t.Helper()
	for _, w := range want {
		p := fmt.Sprintf("%s.%s", path, w.name)
		fd := md.Fields().ByName(protoreflect.Name(w.name))
		testutil.Assert(t, fd != nil, "%s: no such field in %s", p, md.FullName())
		testutil.Equals(t, w.num, fd.Number(), "%s: field number", p)
		if w.msg {
			testutil.Assert(t, fd.Message() != nil, "%s: not a message field", p)
			requireSchema(t, p, fd.Message(), w.sub)
		}
	}
}

func TestRequireWireDetectsMismatches(t *testing.T) {
	// The helpers are the reference decoder of all wire tests; make sure they
	// do reject differences.
	b := encodeFields([]field{vInt("a", 1, -1), vMsg("m", 2, vStr("s", 1, "x")), vPackedSint("p", 3, -1, 1)})
	got, err := parseWire(b)
	testutil.Ok(t, err)
	testutil.Equals(t, 3, len(got))
	testutil.Equals(t, uint64(math.MaxUint64), got[0].u64)
	testutil.Equals(t, []byte{0x01, 0x02}, got[2].raw)

	for _, tc := range []struct {
		name string
		want []field
	}{
		{name: "wrong number", want: []field{vInt("a", 4, -1), vMsg("m", 2, vStr("s", 1, "x")), vPackedSint("p", 3, -1, 1)}},
		{name: "wrong value", want: []field{vInt("a", 1, 1), vMsg("m", 2, vStr("s", 1, "x")), vPackedSint("p", 3, -1, 1)}},
		{name: "wrong type", want: []field{vDouble("a", 1, 1), vMsg("m", 2, vStr("s", 1, "x")), vPackedSint("p", 3, -1, 1)}},
		{name: "wrong nested", want: []field{vInt("a", 1, -1), vMsg("m", 2, vStr("s", 1, "y")), vPackedSint("p", 3, -1, 1)}},
		{name: "plain vs zigzag", want: []field{vInt("a", 1, -1), vMsg("m", 2, vStr("s", 1, "x")), vPackedVarint("p", 3, math.MaxUint64, 1)}},
		{name: "missing field", want: []field{vInt("a", 1, -1), vMsg("m", 2, vStr("s", 1, "x"))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ft := &failRecorder{TB: t}
			func() {
				defer func() { _ = recover() }()
				requireWire(ft, "x", b, tc.want)
			}()
			testutil.Assert(t, ft.failed, "mismatch not detected")
		})
	}
}

// failRecorder turns fatal test failures into a flag, to test the helpers.
type failRecorder struct {
	testing.TB
	failed bool
}

func (f *failRecorder) Helper() {}

func (f *failRecorder) Fatalf(string, ...any) {
	f.failed = true
	panic("fatal")
}

func (f *failRecorder) FailNow() {
	f.failed = true
	panic("fatal")
}

func (f *failRecorder) Fatal(...any) {
	f.failed = true
	panic("fatal")
}

func (f *failRecorder) Errorf(string, ...any) { f.failed = true }

func (f *failRecorder) Error(...any) { f.failed = true }

func (f *failRecorder) Fail() { f.failed = true }
