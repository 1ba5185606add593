// Package backupytest writes Backupy objects of every payload kind, as the
// agent uploads them, for tests that need a store outside package backupy
// (an S3 bucket, a mount): encrypted dumps of one and of several frames,
// a plain zstd upload, an empty one, an object no key opens, and a file
// that is no Backupy object at all.
package backupytest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/backupfs/backupfs/crypto/gcmframe"
)

// Object is one object of a set: its key in the store, its bytes, and
// the dump it decodes to ("" for a foreign file or a locked object).
type Object struct {
	Key  string
	Data []byte
	Dump []byte
	// Name is the main file's name in a mount (and in backupfs backupy
	// ls): the key's base name with what decrypting and sniffing found.
	Name string
}

// Set is a set of objects and the keyring that opens all but the locked
// one.
type Set struct {
	Objects []Object
	// Keyring is the text of a keyring file.
	Keyring string
}

// Object returns the object with the given key, or panics.
func (s *Set) Object(key string) Object {
	for _, o := range s.Objects {
		if o.Key == key {
			return o
		}
	}
	panic("backupytest: no object " + key)
}

// Make returns a set of objects under prefix ("" or ending in "/"), the
// same for the same seed. bigFrames is how many 1 MiB frames the largest
// dump spans (at least 2).
func Make(seed uint64, prefix string, bigFrames int) *Set {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	key := randBytes(rng, 32)
	locked := randBytes(rng, 32)
	var s Set
	add := func(k string, data, dump []byte, name string) {
		s.Objects = append(s.Objects, Object{Key: prefix + k, Data: data, Dump: dump, Name: name})
	}

	// A custom-format pg_dump, incompressible: several frames.
	pg := append([]byte("PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01"), randBytes(rng, max(bigFrames, 2)<<20+12345)...)
	add("co_1/agt_1/job_pg/run_pg1.enc", encrypt(compress(pg), key), pg, "run_pg1.pgdump")

	// A MariaDB dump: compresses well, one frame.
	var sql strings.Builder
	sql.WriteString("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n--\n\n")
	for i := range 20000 {
		fmt.Fprintf(&sql, "INSERT INTO orders VALUES (%d, 'item-%d', %d);\n", i, rng.IntN(1000), rng.IntN(1<<20))
	}
	add("co_1/agt_1/job_sql/run_sql1.enc", encrypt(compress([]byte(sql.String())), key), []byte(sql.String()), "run_sql1.sql")

	// An unencrypted job's upload: the zstd stream itself.
	my := []byte("-- MySQL dump 10.13  Distrib 8.0.36\n" + strings.Repeat("INSERT INTO t VALUES (1,'x');\n", 3000))
	add("co_1/agt_1/job_my/run_my1.zst", compress(my), my, "run_my1.sql")

	// An empty dump, encrypted: the end-of-stream marker alone.
	add("co_1/agt_1/job_empty/run_e1.enc", encrypt(nil, key), []byte{}, "run_e1.bin")

	// An object no key of the keyring opens.
	secret := append([]byte("PGDMP"), randBytes(rng, 5000)...)
	add("co_1/agt_2/job_pg/run_locked.enc", encrypt(compress(secret), locked), nil, "run_locked.enc")

	// Not a Backupy object: shown byte for byte.
	add("co_1/README.txt", []byte("uploaded by hand\n"), nil, "README.txt")

	s.Keyring = "# backupytest\n* hex:" + hex.EncodeToString(key) + "\n"
	return &s
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// compress compresses as the agent does: a streaming writer, no size in
// the frame header.
func compress(dump []byte) []byte {
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		panic(err)
	}
	if _, err := io.Copy(zw, struct{ io.Reader }{bytes.NewReader(dump)}); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return out.Bytes()
}

// encrypt cuts a compressed stream into AES-256-GCM frames.
func encrypt(zst, key []byte) []byte {
	var out bytes.Buffer
	w, err := gcmframe.NewWriter(&out, key)
	if err != nil {
		panic(err)
	}
	if _, err := w.Write(zst); err != nil {
		panic(err)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return out.Bytes()
}
