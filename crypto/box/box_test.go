package box

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20"
	//lint:ignore SA1019 the reference secretbox is built on the raw one-time MAC
	"golang.org/x/crypto/poly1305"
)

// fixtureKeyField extracts a 32-byte field from the maxbupst primary test key
// by its position in the PrimaryKeyV1 layout (tag, id, then 14 fields of 32
// bytes). Key parsing proper lives in repo/bupstash; this keeps the crypto
// known-answer test independent of it.
func fixtureKeyField(t *testing.T, field int) (k [32]byte) {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/bupstash-0.10.3/maxbupst-testkey.key")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	s = s[strings.Index(s, "-----BEGIN BUPSTASH KEY-----")+len("-----BEGIN BUPSTASH KEY-----") : strings.Index(s, "-----END")]
	b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 465 {
		t.Fatalf("decoded key is %d bytes, want 465", len(b))
	}
	off := 1 + 16 + 32*field
	copy(k[:], b[off:off+32])
	return k
}

const (
	fieldMetadataPK  = 11
	fieldMetadataSK  = 12
	fieldMetadataPSK = 13
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The worked example of docs/bupstash-format.md §14.2: the secret
// metadata envelope of item c3c7b8e9… in small-0.10.3.
func TestKnownAnswerFixtureMetadata(t *testing.T) {
	item, err := os.ReadFile("../../testdata/bupstash-0.10.3/small-0.10.3/items/c3c7b8e93cec5c85c45a58e6c866f918")
	if err != nil {
		t.Fatal(err)
	}
	env := item[len(item)-225:]
	if got := hex.EncodeToString(env[:NonceSize]); got != "77e6a3425110590214cd7db847496ffecd25e4ffb8fd3349" {
		t.Fatalf("nonce = %s", got)
	}

	sk := fixtureKeyField(t, fieldMetadataSK)
	psk := fixtureKeyField(t, fieldMetadataPSK)
	pk, err := PublicKey(&sk)
	if err != nil {
		t.Fatal(err)
	}
	if want := fixtureKeyField(t, fieldMetadataPK); pk != want {
		t.Fatalf("X25519(metadata_sk, basepoint) = %x, want metadata_pk %x", pk, want)
	}

	epk, err := EphemeralPK(env)
	if err != nil {
		t.Fatal(err)
	}
	k, err := DeriveKey(&sk, &psk, &epk)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustHex(t, "b984d55c53913f67661273dd0ced3b5920a60e0ec8e4c01281c742d652448480"); !bytes.Equal(k[:], want) {
		t.Fatalf("box key = %x, want %x", k, want)
	}

	pt, err := OpenWithKey(nil, &k, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(pt) != 153 {
		t.Fatalf("plaintext is %d bytes, want 153", len(pt))
	}
	// tags map: 1 entry, "masysma" => "singlefile-bupstash-key.ads", then
	// data_size 3983 (8f 1f), index_size 0, footer 0.
	tail := append([]byte{0x01, 0x07}, "masysma"...)
	tail = append(tail, 0x1b)
	tail = append(tail, "singlefile-bupstash-key.ads"...)
	tail = append(tail, 0x8f, 0x1f, 0x00, 0x00)
	if !bytes.HasSuffix(pt, tail) {
		t.Fatalf("plaintext tail = %x, want %x", pt[len(pt)-len(tail):], tail)
	}

	o := NewOpener(sk, psk)
	pt2, err := o.Open(nil, env)
	if err != nil || !bytes.Equal(pt, pt2) {
		t.Fatalf("Opener.Open = %x, %v", pt2, err)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	var sk, psk [32]byte
	sk[0], psk[0] = 1, 2
	pk, err := PublicKey(&sk)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(pk, psk)
	if err != nil {
		t.Fatal(err)
	}
	o := NewOpener(sk, psk)
	for _, n := range []int{0, 1, 31, 32, 33, 63, 64, 65, 1000, 1 << 20} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		env := s.Seal(nil, msg)
		if len(env) != n+Overhead {
			t.Fatalf("len(envelope) = %d, want %d", len(env), n+Overhead)
		}
		got, err := o.Open([]byte("prefix"), env)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(got, append([]byte("prefix"), msg...)) {
			t.Fatalf("n=%d: round trip mismatch", n)
		}
		inPlace, err := o.OpenInPlace(bytes.Clone(env))
		if err != nil || !bytes.Equal(inPlace, msg) {
			t.Fatalf("n=%d: in place: %v", n, err)
		}
		k, _ := o.Key(env)
		if err := VerifyWithKey(&k, env); err != nil {
			t.Fatalf("n=%d: verify: %v", n, err)
		}
		for _, span := range [][2]int{{0, min(n, 18)}, {max(0, n-5), n}, {n / 2, n/2 + min(n-n/2, 70)}} {
			part := make([]byte, span[1]-span[0])
			if err := DecryptAtWithKey(&k, env, span[0], part); err != nil {
				t.Fatalf("n=%d span %v: %v", n, span, err)
			}
			if !bytes.Equal(part, msg[span[0]:span[1]]) {
				t.Fatalf("n=%d span %v: got %x", n, span, part)
			}
		}
	}
	// Nonces increase per envelope, so two seals of the same message differ.
	a, b := s.Seal(nil, []byte("x")), s.Seal(nil, []byte("x"))
	if bytes.Equal(a, b) {
		t.Fatal("two envelopes are identical; nonce not advanced")
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	var sk, psk [32]byte
	sk[0] = 9
	pk, _ := PublicKey(&sk)
	s, _ := NewSealer(pk, psk)
	o := NewOpener(sk, psk)
	env := s.Seal(nil, []byte("attack at dawn, attack at dawn, attack at dawn"))
	for i := 0; i < len(env)-KeySize; i++ { // flipping the ephemeral key changes the derived key: covered below
		bad := bytes.Clone(env)
		bad[i] ^= 0x01
		if _, err := o.Open(nil, bad); !errors.Is(err, ErrAuth) {
			t.Fatalf("flip at %d: err = %v, want ErrAuth", i, err)
		}
	}
	bad := bytes.Clone(env)
	bad[len(bad)-1] ^= 0x40
	if _, err := o.Open(nil, bad); err == nil {
		t.Fatal("flipped ephemeral key accepted")
	}
	if _, err := o.Open(nil, env[:Overhead-1]); !errors.Is(err, ErrShortEnvelope) {
		t.Fatalf("short envelope: err = %v", err)
	}
	wrong := NewOpener([32]byte{0, 7}, psk) // X25519 clamps the low bits of byte 0, so differ elsewhere
	if _, err := wrong.Open(nil, env); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: err = %v, want ErrAuth", err)
	}
}

// A small-order ephemeral key makes X25519 return all zeros; Bupstash would
// then use a zero box key. We must refuse instead.
func TestDeriveKeyRefusesSmallOrderPoint(t *testing.T) {
	var sk, psk, zeroPoint [32]byte
	sk[0] = 1
	if _, err := DeriveKey(&sk, &psk, &zeroPoint); !errors.Is(err, ErrWeakKey) {
		t.Fatalf("err = %v, want ErrWeakKey", err)
	}
	env := make([]byte, Overhead+10) // ephemeral key all zero
	if _, err := NewOpener(sk, psk).Open(nil, env); !errors.Is(err, ErrWeakKey) {
		t.Fatalf("Open: err = %v, want ErrWeakKey", err)
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, size := range []int{1 << 20, 8 << 20} {
		b.Run(byteSize(size), func(b *testing.B) {
			var sk, psk [32]byte
			sk[0] = 3
			pk, _ := PublicKey(&sk)
			s, _ := NewSealer(pk, psk)
			env := s.Seal(nil, make([]byte, size))
			o := NewOpener(sk, psk)
			buf := make([]byte, 0, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := o.Open(buf[:0], env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<20 {
		return strconv.Itoa(n>>20) + "MiB"
	}
	return strconv.Itoa(n) + "B"
}

// referenceSeal is the secretbox of docs/bupstash-format.md §5.3 written out
// with the portable ChaCha20 alone, to check the faster keystream against.
func referenceSeal(t *testing.T, k *BoxKey, nonce *[NonceSize]byte, epk *[KeySize]byte, msg []byte) []byte {
	t.Helper()
	c, err := chacha20.NewUnauthenticatedCipher(k[:], nonce[:])
	if err != nil {
		t.Fatal(err)
	}
	var polyKey [32]byte
	c.XORKeyStream(polyKey[:], polyKey[:])
	ct := make([]byte, len(msg))
	c.XORKeyStream(ct, msg)
	var mac [MACSize]byte
	poly1305.Sum(&mac, ct, &polyKey)
	env := append(append(append(nonce[:len(nonce):len(nonce)], mac[:]...), ct...), epk[:]...)
	return env
}

// TestKeystreamMatchesReference seals and opens around the size where the
// AEAD's keystream takes over, against the portable reference, and checks
// that a caller's buffer past the plaintext is left alone.
func TestKeystreamMatchesReference(t *testing.T) {
	var k BoxKey
	var nonce [NonceSize]byte
	var epk [KeySize]byte
	for i := range k {
		k[i], epk[i] = byte(i*3+1), byte(i)
	}
	for i := range nonce {
		nonce[i] = byte(200 - i)
	}
	for _, n := range []int{aeadMin - 1, aeadMin, aeadMin + 31, aeadMin + 33, 64<<10 + 7, 1<<20 + 5} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i*7 + i>>9)
		}
		ref := referenceSeal(t, &k, &nonce, &epk, msg)
		if got := SealWithKey(nil, &k, &nonce, &epk, msg); !bytes.Equal(got, ref) {
			t.Fatalf("n=%d: SealWithKey differs from the reference", n)
		}
		got, err := OpenWithKey(nil, &k, ref)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("n=%d: OpenWithKey: %v", n, err)
		}
		// A caller's buffer with room after it: nothing past the plaintext
		// may change.
		buf := bytes.Repeat([]byte{0xee}, 3+n+100)
		got, err = OpenWithKey(buf[:3], &k, ref)
		if err != nil || !bytes.Equal(got[3:], msg) {
			t.Fatalf("n=%d: OpenWithKey into a buffer: %v", n, err)
		}
		if !bytes.Equal(buf[3+n:], bytes.Repeat([]byte{0xee}, 100)) {
			t.Fatalf("n=%d: OpenWithKey wrote past the plaintext", n)
		}
		o := &Opener{keys: map[[KeySize]byte]BoxKey{epk: k}}
		if pt, err := o.OpenInPlace(bytes.Clone(ref)); err != nil || !bytes.Equal(pt, msg) {
			t.Fatalf("n=%d: OpenInPlace: %v", n, err)
		}
		bad := bytes.Clone(ref)
		bad[NonceSize+MACSize+n/2] ^= 1
		if _, err := o.OpenInPlace(bad); !errors.Is(err, ErrAuth) {
			t.Fatalf("n=%d: tampered envelope: %v", n, err)
		}
	}
}
