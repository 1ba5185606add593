package bench

import (
	"crypto/rand"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/backupfs/backupfs/crypto/blake3"
	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/crypto/gcmframe"
	"github.com/backupfs/backupfs/internal/testrepo"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// A Limit is the single-core throughput of one primitive a read needs.
type Limit struct {
	Name string
	MBps float64 // of the bytes named in Of
	Of   string
}

// leafSize is the size of the leaves the limits decode: the datasets'
// maximum leaf size, which sequential reads of big files mostly meet.
const leafSize = 8 << 20

// MeasureLimits times each primitive on one core (GOMAXPROCS 1, this
// goroutine locked to its thread), on the text content the datasets hold,
// each for at least d, and returns the best of three such rounds. The
// last one, Pipeline, is what a cache miss costs per byte of plaintext:
// the upper bound of one core decoding leaves.
func MeasureLimits(d time.Duration) ([]Limit, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	plain := make([]byte, leafSize)
	if _, err := io.ReadFull(testrepo.Text(leafSize, 1).Open(), plain); err != nil {
		return nil, err
	}
	// The leaf as testrepo (and Bupstash 0.12) writes it: zstd level 3,
	// content size in the header.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true), zstd.WithWindowSize(2<<20))
	if err != nil {
		return nil, err
	}
	compressed := enc.EncodeAll(plain, nil)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	lz4Block := make([]byte, lz4.CompressBlockBound(len(plain)))
	var lc lz4.Compressor
	n, err := lc.CompressBlock(plain, lz4Block)
	if err != nil {
		return nil, err
	}
	lz4Block = lz4Block[:n]

	var sk, psk [box.KeySize]byte
	rand.Read(sk[:])
	rand.Read(psk[:])
	pk, err := box.PublicKey(&sk)
	if err != nil {
		return nil, err
	}
	sealer, err := box.NewSealer(pk, psk)
	if err != nil {
		return nil, err
	}
	opener := box.NewOpener(sk, psk)
	envelope := sealer.Seal(nil, compressed)
	if _, err := opener.Key(envelope); err != nil { // derived once, as for a session's leaves
		return nil, err
	}
	mib := plain[:1<<20]
	mibEnvelope := sealer.Seal(nil, mib)
	envBuf := make([]byte, len(envelope))

	dek := make([]byte, gcmframe.KeySize)
	rand.Read(dek)
	gcm, err := gcmframe.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	var nonce [gcmframe.NonceSize]byte
	frame := gcm.AppendFrame(nil, &nonce, mib)[gcmframe.HeaderSize:]
	frameCopy := make([]byte, len(frame))

	var hashKey [32]byte
	rand.Read(hashKey[:])
	out := make([]byte, 0, leafSize)

	type probe struct {
		name, of string
		bytes    int
		op       func() error
	}
	probes := []probe{
		{"secretbox open (XChaCha20-Poly1305), 1 MiB, in place", "ciphertext", len(mib), func() error {
			// As a leaf is opened: in the buffer its chunk was read into.
			_, err := opener.OpenInPlace(envBuf[:copy(envBuf, mibEnvelope)])
			return err
		}},
		{"keyed BLAKE3, 1 MiB", "input", len(mib), func() error {
			blake3.SumKeyed(&hashKey, mib)
			return nil
		}},
		{fmt.Sprintf("zstd decode, %d MiB text leaf (%.1f:1)", leafSize>>20, float64(len(plain))/float64(len(compressed))), "output", len(plain), func() error {
			_, err := dec.DecodeAll(compressed, out[:0])
			return err
		}},
		{fmt.Sprintf("lz4 decode, %d MiB text leaf (%.1f:1)", leafSize>>20, float64(len(plain))/float64(len(lz4Block))), "output", len(plain), func() error {
			_, err := lz4.UncompressBlock(lz4Block, out[:leafSize])
			return err
		}},
		{"AES-256-GCM open, 1 MiB frame", "ciphertext", len(frame), func() error {
			copy(frameCopy, frame)
			_, err := gcm.Open(frameCopy)
			return err
		}},
		{"Pipeline", "plaintext", len(plain), func() error {
			// What a cache miss of a zstd leaf does: open the envelope,
			// decompress, check the keyed address.
			pt, err := opener.OpenInPlace(envBuf[:copy(envBuf, envelope)])
			if err != nil {
				return err
			}
			leaf, err := dec.DecodeAll(pt, out[:0])
			if err != nil {
				return err
			}
			blake3.SumKeyed(&hashKey, leaf)
			return nil
		}},
	}
	var limits []Limit
	for _, p := range probes {
		best := 0.0
		for range 3 {
			mbps, err := throughput(p.bytes, d, p.op)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.name, err)
			}
			best = max(best, mbps)
		}
		name := p.name
		if name == "Pipeline" {
			name = fmt.Sprintf("decrypt + verify + decompress (secretbox, zstd, keyed BLAKE3), %d MiB leaf", leafSize>>20)
		}
		limits = append(limits, Limit{Name: name, MBps: best, Of: p.of})
	}
	return limits, nil
}

// throughput runs op until d has passed and returns MB/s (10^6 bytes).
func throughput(bytes int, d time.Duration, op func() error) (float64, error) {
	if err := op(); err != nil { // warm up, and fail early
		return 0, err
	}
	start := time.Now()
	n := 0
	for time.Since(start) < d || n < 3 {
		if err := op(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(bytes) * float64(n) / time.Since(start).Seconds() / 1e6, nil
}
