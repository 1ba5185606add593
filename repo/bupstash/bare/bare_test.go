package bare

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestUint(t *testing.T) {
	tests := []struct {
		in   []byte
		want uint64
		err  error
	}{
		{[]byte{0x00}, 0, nil},
		{[]byte{0x01}, 1, nil},
		{[]byte{0x93, 0x02}, 275, nil},
		{[]byte{0xe8, 0x07}, 1000, nil},
		{[]byte{0x80, 0x00}, 0, nil}, // non-minimal, accepted like serde_bare
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 1<<64 - 1, nil},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, 0, ErrOverflow},
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, ErrOverflow},
		{[]byte{0x80}, 0, io.ErrUnexpectedEOF},
		{nil, 0, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		d := NewDecoder(tt.in)
		got := d.Uint()
		if !errors.Is(d.Err(), tt.err) && !(tt.err == nil && d.Err() == nil) {
			t.Errorf("Uint(%x): err %v, want %v", tt.in, d.Err(), tt.err)
			continue
		}
		if tt.err == nil && got != tt.want {
			t.Errorf("Uint(%x) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	var e Encoder
	e.Uint(275)
	e.U64(1686488340915)
	e.U32(7)
	e.Bool(true)
	e.Option(false)
	e.Data([]byte{0xe9, 0x00})
	e.String("héllo")
	e.Fixed(bytes.Repeat([]byte{0xab}, 32))

	d := NewDecoder(e.Buf)
	if v := d.Uint(); v != 275 {
		t.Fatalf("Uint = %d", v)
	}
	if v := d.U64(); v != 1686488340915 {
		t.Fatalf("U64 = %d", v)
	}
	if v := d.U32(); v != 7 {
		t.Fatalf("U32 = %d", v)
	}
	if !d.Bool() || d.Option() {
		t.Fatal("bool/option mismatch")
	}
	if b := d.Data(); !bytes.Equal(b, []byte{0xe9, 0x00}) {
		t.Fatalf("Data = %x", b)
	}
	if s := d.String(); s != "héllo" {
		t.Fatalf("String = %q", s)
	}
	if a := d.Array32(); a[0] != 0xab || a[31] != 0xab {
		t.Fatalf("Array32 = %x", a)
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestStringRejectsInvalidUTF8(t *testing.T) {
	d := NewDecoder([]byte{0x02, 0xc3, 0x28})
	_ = d.String()
	if !errors.Is(d.Err(), ErrInvalidUTF8) {
		t.Fatalf("err = %v, want ErrInvalidUTF8", d.Err())
	}
}

func TestDataLengthPastEnd(t *testing.T) {
	d := NewDecoder([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01})
	if b := d.Data(); b != nil || !errors.Is(d.Err(), io.ErrUnexpectedEOF) {
		t.Fatalf("Data = %x, err %v", b, d.Err())
	}
}

func TestErrorsAreSticky(t *testing.T) {
	d := NewDecoder([]byte{0x01})
	d.U64()
	if d.Uint() != 0 || d.Err() == nil {
		t.Fatal("decoding after an error must keep failing")
	}
}

func TestFinishTrailing(t *testing.T) {
	d := NewDecoder([]byte{0x01, 0x02})
	d.U8()
	if d.Finish() == nil {
		t.Fatal("Finish must report trailing bytes")
	}
}
