// Package box implements the encrypted envelope Bupstash puts around every
// data and index chunk and around item secret metadata:
//
//	nonce [24] || mac [16] || ciphertext [n] || ephemeral_pk [32]
//
// The box key is derived from the recipient's X25519 secret key, a
// pre-shared key and the sender's ephemeral public key; the payload is
// sealed with libsodium's XChaCha20-Poly1305 secretbox (not the IETF AEAD:
// the MAC covers only the ciphertext and the payload keystream starts at
// byte 32 of block 0).
//
// Unlike Bupstash, which silently falls back to an all-zero box key when the
// ephemeral key is of small order, this package treats that case as a
// corrupt envelope.
package box

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	//lint:ignore SA1019 libsodium's secretbox is built on the raw one-time MAC; no other package offers it
	"golang.org/x/crypto/poly1305"
	"lukechampine.com/blake3"
)

// Envelope layout sizes.
const (
	NonceSize = 24
	MACSize   = 16
	KeySize   = 32
	// Overhead is the number of bytes an envelope adds to its plaintext.
	Overhead = NonceSize + MACSize + KeySize
)

// Sentinel errors. Callers wrap them with the object's name.
var (
	// ErrAuth means the MAC did not verify: wrong key or tampered data.
	ErrAuth = errors.New("authentication failed (wrong key or corrupt data)")
	// ErrShortEnvelope means the envelope is too short to hold its fixed parts.
	ErrShortEnvelope = errors.New("envelope too short")
	// ErrWeakKey means X25519 with the envelope's ephemeral key gave the
	// all-zero shared secret, which only a forged envelope can cause.
	ErrWeakKey = errors.New("ephemeral public key is of small order")
)

// BoxKey is a derived symmetric key for one (recipient, ephemeral key) pair.
type BoxKey [KeySize]byte

// DeriveKey computes the box key Bupstash uses between the recipient secret
// key sk (with its pre-shared key psk) and an ephemeral public key:
// BLAKE3-keyed(psk, HChaCha20(X25519(sk, epk), 0^16)).
func DeriveKey(sk, psk, ephemeralPK *[KeySize]byte) (BoxKey, error) {
	priv, err := ecdh.X25519().NewPrivateKey(sk[:])
	if err != nil {
		return BoxKey{}, err
	}
	return deriveKey(priv, psk, ephemeralPK)
}

// deriveKey is DeriveKey with the recipient's key already parsed: parsing
// computes its public half, a second scalar multiplication.
func deriveKey(priv *ecdh.PrivateKey, psk, ephemeralPK *[KeySize]byte) (BoxKey, error) {
	pub, err := ecdh.X25519().NewPublicKey(ephemeralPK[:])
	if err != nil {
		return BoxKey{}, ErrWeakKey
	}
	shared, err := priv.ECDH(pub) // fails on the all-zero result
	if err != nil {
		return BoxKey{}, ErrWeakKey
	}
	k0, err := chacha20.HChaCha20(shared, make([]byte, 16))
	if err != nil {
		return BoxKey{}, fmt.Errorf("hchacha20: %w", err)
	}
	h := blake3.New(KeySize, psk[:])
	h.Write(k0)
	var k BoxKey
	h.Sum(k[:0])
	return k, nil
}

// PublicKey returns the X25519 public key of sk.
func PublicKey(sk *[KeySize]byte) ([KeySize]byte, error) {
	var pk [KeySize]byte
	p, err := curve25519.X25519(sk[:], curve25519.Basepoint)
	if err != nil {
		return pk, err
	}
	copy(pk[:], p)
	return pk, nil
}

// EphemeralPK returns the ephemeral public key stored at the end of an
// envelope.
func EphemeralPK(envelope []byte) (pk [KeySize]byte, err error) {
	if len(envelope) < Overhead {
		return pk, ErrShortEnvelope
	}
	copy(pk[:], envelope[len(envelope)-KeySize:])
	return pk, nil
}

// PlaintextLen returns the plaintext length of an envelope of n bytes.
func PlaintextLen(n int) int { return n - Overhead }

// OpenWithKey authenticates and decrypts envelope with an already derived
// box key, appending the plaintext to dst.
func OpenWithKey(dst []byte, k *BoxKey, envelope []byte) ([]byte, error) {
	if len(envelope) < Overhead {
		return nil, ErrShortEnvelope
	}
	out, pt, fresh := grow(dst, len(envelope)-Overhead)
	if err := openInto(pt, fresh, k, envelope); err != nil {
		return nil, err
	}
	return out, nil
}

// openInto authenticates envelope and decrypts its payload into pt, which
// is either exactly the envelope's ciphertext (in place) or does not
// overlap it. spare says that the 16 bytes after pt may be overwritten.
func openInto(pt []byte, spare bool, k *BoxKey, envelope []byte) error {
	nonce, ct, c, err := verify(k, envelope)
	if err != nil {
		return err
	}
	payloadXOR(k, nonce, c, pt, ct, spare)
	return nil
}

// split returns an envelope's parts: nonce ‖ MAC ‖ ciphertext ‖ the
// sender's ephemeral public key.
func split(envelope []byte) (nonce []byte, mac [MACSize]byte, ct []byte, err error) {
	if len(envelope) < Overhead {
		return nil, mac, nil, ErrShortEnvelope
	}
	copy(mac[:], envelope[NonceSize:NonceSize+MACSize])
	return envelope[:NonceSize], mac, envelope[NonceSize+MACSize : len(envelope)-KeySize], nil
}

// verify checks an envelope's Poly1305 MAC and returns its nonce and
// ciphertext, and the cipher positioned at the payload's keystream.
func verify(k *BoxKey, envelope []byte) (nonce, ct []byte, c *chacha20.Cipher, err error) {
	nonce, mac, ct, err := split(envelope)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err = chacha20.NewUnauthenticatedCipher(k[:], nonce)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("xchacha20: %w", err)
	}
	// The one-time Poly1305 key is the first half of keystream block 0;
	// the cipher keeps the second half for the payload.
	var polyKey [32]byte
	c.XORKeyStream(polyKey[:], polyKey[:])
	if !poly1305.Verify(&mac, ct, &polyKey) {
		return nil, nil, nil, ErrAuth
	}
	return nonce, ct, c, nil
}

// aeadMin is the payload size from which payloadXOR uses the IETF AEAD's
// keystream, which golang.org/x/crypto implements in assembly (on amd64,
// about three times the speed of its portable ChaCha20 here); below it
// the AEAD's setup costs more than it saves.
const aeadMin = 1024

// payloadXOR sets dst to src XOR the secretbox payload keystream, which
// starts at byte 32 of block 0; c is the cipher with those first 32 bytes
// (the Poly1305 key) consumed. dst and src must be the same slice or not
// overlap.
//
// From block 1 on, the keystream is the one XChaCha20-Poly1305 (the IETF
// AEAD of the same key and nonce) encrypts its payload with, so Seal over
// src[32:] computes dst[32:]. Seal appends a tag, of no use here: that
// path is taken only when spare says the 16 bytes after dst may be
// overwritten.
func payloadXOR(k *BoxKey, nonce []byte, c *chacha20.Cipher, dst, src []byte, spare bool) {
	head := min(32, len(src))
	c.XORKeyStream(dst[:head], src[:head])
	rest := src[head:]
	if len(rest) == 0 {
		return
	}
	out := dst[head:head]
	if !spare || len(rest) < aeadMin || cap(out) < len(rest)+chacha20poly1305.Overhead {
		c.XORKeyStream(dst[head:], rest)
		return
	}
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		panic(err) // the key size is fixed by the type
	}
	aead.Seal(out, nonce, rest, nil)
}

// VerifyWithKey checks an envelope's MAC without decrypting it.
func VerifyWithKey(k *BoxKey, envelope []byte) error {
	_, _, _, err := verify(k, envelope)
	return err
}

// DecryptAtWithKey decrypts plaintext bytes [off, off+len(dst)) of envelope
// into dst without checking the MAC: call VerifyWithKey first. It lets a
// reader learn a chunk's header and footer (and so its decompressed size)
// without decrypting the whole chunk.
func DecryptAtWithKey(k *BoxKey, envelope []byte, off int, dst []byte) error {
	nonce, _, ct, err := split(envelope)
	if err != nil {
		return err
	}
	if off < 0 || off+len(dst) > len(ct) {
		return fmt.Errorf("decrypt span [%d, %d) outside a %d-byte plaintext", off, off+len(dst), len(ct))
	}
	c, err := chacha20.NewUnauthenticatedCipher(k[:], nonce)
	if err != nil {
		return fmt.Errorf("xchacha20: %w", err)
	}
	// Plaintext byte p uses keystream byte 32+p (the first 32 bytes keyed
	// the MAC). Jump to its 64-byte block, then skip into it.
	ks := 32 + off
	c.SetCounter(uint32(ks / 64))
	var skip [64]byte
	c.XORKeyStream(skip[:ks%64], skip[:ks%64])
	c.XORKeyStream(dst, ct[off:off+len(dst)])
	return nil
}

// SealWithKey seals plaintext under k with the given nonce and records
// ephemeralPK in the envelope, appending the envelope to dst.
func SealWithKey(dst []byte, k *BoxKey, nonce *[NonceSize]byte, ephemeralPK *[KeySize]byte, plaintext []byte) []byte {
	out, env, _ := grow(dst, len(plaintext)+Overhead)
	copy(env, nonce[:])
	ct := env[NonceSize+MACSize : NonceSize+MACSize+len(plaintext)]
	c, err := chacha20.NewUnauthenticatedCipher(k[:], nonce[:])
	if err != nil {
		panic(err) // key and nonce sizes are fixed by the types
	}
	var polyKey [32]byte
	c.XORKeyStream(polyKey[:], polyKey[:])
	// The spare tag lands where the ephemeral key goes next.
	payloadXOR(k, nonce[:], c, ct, plaintext, true)
	var mac [MACSize]byte
	poly1305.Sum(&mac, ct, &polyKey)
	copy(env[NonceSize:], mac[:])
	copy(env[len(env)-KeySize:], ephemeralPK[:])
	return out
}

// grow extends dst by n bytes. A new buffer (fresh) has room after its
// end for payloadXOR's spare tag.
func grow(dst []byte, n int) (whole, tail []byte, fresh bool) {
	total := len(dst) + n
	if cap(dst) >= total {
		whole = dst[:total]
	} else {
		whole = make([]byte, total, total+chacha20poly1305.Overhead)
		copy(whole, dst)
		fresh = true
	}
	return whole, whole[len(dst):], fresh
}

// Opener opens envelopes addressed to one recipient key pair. It caches the
// derived box key per ephemeral public key: Bupstash uses one ephemeral key
// per upload session, so a tree's chunks share very few of them and the
// X25519 step is paid once per session rather than once per chunk.
// An Opener is safe for concurrent use.
type Opener struct {
	priv *ecdh.PrivateKey
	psk  [KeySize]byte

	mu   sync.Mutex
	keys map[[KeySize]byte]BoxKey
}

// maxCachedKeys bounds the derived-key cache; past it the cache is reset,
// which only costs re-deriving keys.
const maxCachedKeys = 4096

// NewOpener returns an Opener for the secret key sk and pre-shared key psk.
func NewOpener(sk, psk [KeySize]byte) *Opener {
	priv, err := ecdh.X25519().NewPrivateKey(sk[:])
	if err != nil {
		panic(err) // only for a key that is not 32 bytes
	}
	return &Opener{priv: priv, psk: psk, keys: make(map[[KeySize]byte]BoxKey)}
}

// Key returns the box key for the envelope's ephemeral public key.
func (o *Opener) Key(envelope []byte) (BoxKey, error) {
	epk, err := EphemeralPK(envelope)
	if err != nil {
		return BoxKey{}, err
	}
	o.mu.Lock()
	k, ok := o.keys[epk]
	o.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err = deriveKey(o.priv, &o.psk, &epk)
	if err != nil {
		return BoxKey{}, err
	}
	o.mu.Lock()
	if len(o.keys) >= maxCachedKeys {
		clear(o.keys)
	}
	o.keys[epk] = k
	o.mu.Unlock()
	return k, nil
}

// OpenInPlace authenticates envelope and decrypts it in place, returning
// the plaintext, which aliases envelope: no memory is allocated.
func (o *Opener) OpenInPlace(envelope []byte) ([]byte, error) {
	k, err := o.Key(envelope)
	if err != nil {
		return nil, err
	}
	// Decrypted over itself; the ephemeral key after it (already used)
	// may take payloadXOR's spare tag.
	ct := envelope[NonceSize+MACSize : len(envelope)-KeySize]
	if err := openInto(ct, true, &k, envelope); err != nil {
		return nil, err
	}
	return ct, nil
}

// Open authenticates and decrypts envelope, appending the plaintext to dst.
func (o *Opener) Open(dst, envelope []byte) ([]byte, error) {
	k, err := o.Key(envelope)
	if err != nil {
		return nil, err
	}
	return OpenWithKey(dst, &k, envelope)
}

// Sealer seals envelopes for one recipient the way a Bupstash upload session
// does: one ephemeral key pair, a random starting nonce incremented per
// envelope. It is used by tests and the test-repository generator.
// A Sealer is safe for concurrent use.
type Sealer struct {
	mu    sync.Mutex
	key   BoxKey
	epk   [KeySize]byte
	nonce [NonceSize]byte
}

// NewSealer starts a session sealing for the recipient public key pk with
// pre-shared key psk.
func NewSealer(pk, psk [KeySize]byte) (*Sealer, error) {
	var esk [KeySize]byte
	if _, err := rand.Read(esk[:]); err != nil {
		return nil, err
	}
	epk, err := PublicKey(&esk)
	if err != nil {
		return nil, err
	}
	// The sender derives the same key from its ephemeral secret and the
	// recipient's public key.
	k, err := DeriveKey(&esk, &psk, &pk)
	if err != nil {
		return nil, err
	}
	s := &Sealer{key: k, epk: epk}
	if _, err := rand.Read(s.nonce[:]); err != nil {
		return nil, err
	}
	return s, nil
}

// Seal appends the envelope of plaintext to dst.
func (s *Sealer) Seal(dst, plaintext []byte) []byte {
	s.mu.Lock()
	nonce := s.nonce
	increment(&s.nonce)
	s.mu.Unlock()
	return SealWithKey(dst, &s.key, &nonce, &s.epk, plaintext)
}

// increment adds one to a little-endian counter, as sodium_increment does.
func increment(n *[NonceSize]byte) {
	for i := range n {
		n[i]++
		if n[i] != 0 {
			return
		}
	}
}
