package bupstash

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/backupfs/backupfs/crypto/box"
	"github.com/backupfs/backupfs/internal/redact"
)

// allVerbs are the ways fmt may be asked to print a value. A type that
// formats itself (fmt.Formatter) accepts them all.
var allVerbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%b", "%10.3v", "%-40s", "%T", "%p"}

// structVerbs are those go vet accepts for a struct that does not format
// itself. (Others, %s say, print through fmt's error path, which shows
// what a pointer field points to: vet's printf check rejects them.)
var structVerbs = []string{"%v", "%+v", "%#v", "%T", "%p"}

// formatted prints v every way fmt (with verbs), slog (text and JSON) and
// encoding/json can, directly and inside containers.
func formatted(t *testing.T, v any, verbs []string) string {
	t.Helper()
	var out strings.Builder
	for _, holder := range []any{
		v,
		[]any{v},
		map[string]any{"k": v},
		struct{ K any }{v},
		fmt.Errorf("wrapped: %v", v),
	} {
		for _, verb := range verbs {
			if verb == "%p" && reflect.ValueOf(holder).Kind() != reflect.Pointer && reflect.ValueOf(holder).Kind() != reflect.Map && reflect.ValueOf(holder).Kind() != reflect.Slice {
				// fmt prints a %p of anything but a pointer, map or slice
				// by reflection, bypassing Format; go vet rejects it.
				continue
			}
			fmt.Fprintf(&out, verb+"\n", holder)
		}
		fmt.Fprintln(&out, holder)
		fmt.Fprint(&out, holder, "\n")
		fmt.Fprintf(&out, "%v\n", []any{holder})
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		log := slog.New(h(&b))
		log.Info("key", "key", v)
		log.Info("key", slog.Any("key", v), slog.Group("g", "key", v))
		log.With("key", v).Info("with")
		out.Write(b.Bytes())
	}
	if j, err := json.Marshal(v); err == nil {
		out.Write(j)
	}
	return out.String()
}

// assertNoSecret fails if out shows any 8-byte window of a secret.
func assertNoSecret(t *testing.T, what, out string, secrets [][]byte) {
	t.Helper()
	for i, s := range secrets {
		if form, leaked := redact.Leaked(out, s); leaked {
			t.Fatalf("%s: printing it shows secret %d (as %q):\n%s", what, i, form, out)
		}
	}
}

// keySecrets returns every part of k's key that is present. (The public
// keys are no secret, but nothing prints them either.)
func keySecrets(k *Key) [][]byte {
	var s [][]byte
	for _, p := range k.k.Parts() {
		if p.OK {
			s = append(s, bytes.Clone(p.V[:]))
		}
	}
	return s
}

// A key formats itself as its kind and id with every verb, through slog's
// handlers and encoding/json, alone or inside anything: `%v` of a Key
// used to print every secret part.
func TestKeysNeverPrintTheirSecrets(t *testing.T) {
	for _, name := range []string{"primary.key", "list-contents.key", "list.key", "put.key"} {
		k, err := loadKey(testdata + "/bupstash-0.12.1/keys/" + name)
		if err != nil {
			t.Fatal(err)
		}
		secrets := keySecrets(k)
		if len(secrets) < 3 {
			t.Fatalf("%s: %d parts: the test proves nothing", name, len(secrets))
		}
		for what, v := range map[string]any{"*Key": k, "Key": *k, "key material": k.k, "key material value": *k.k, "a part": k.k.DataHashKeyPart1} {
			out := formatted(t, v, allVerbs)
			assertNoSecret(t, name+": "+what, out, secrets)
		}
		// What it does show: kind and id.
		if got := fmt.Sprintf("%v", k); !strings.Contains(got, k.Kind()) || !strings.Contains(got, k.ID().String()) {
			t.Errorf("%s: %%v = %q, want its kind and id", name, got)
		}
	}
	k, _ := loadKey(testdata + "/bupstash-0.12.1/keys/primary.key")
	if got, want := fmt.Sprintf("%+v", k), "bupstash.Key(primary b4516a10824916f79b9e909e0f8d42b8)"; got != want {
		t.Errorf("%%+v = %q, want %q", got, want)
	}
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("opened", "key", k)
	if !strings.Contains(b.String(), `"key":{"kind":"primary","id":"b4516a10824916f79b9e909e0f8d42b8"}`) {
		t.Errorf("JSON log: %s", b.String())
	}
}

// The other holders of key material print no secret either: the openers
// and sealers made from a key, derived box keys, and items (which hold
// their halves of the leaves' hash keys).
func TestSecretHoldersNeverPrintTheirSecrets(t *testing.T) {
	k, err := loadKey(testdata + "/bupstash-0.12.1/keys/primary.key")
	if err != nil {
		t.Fatal(err)
	}
	secrets := keySecrets(k)
	opener := k.dataOpener()
	sealer, err := box.NewSealer(k.k.DataPK.V, k.k.DataPSK.V)
	if err != nil {
		t.Fatal(err)
	}
	env := sealer.Seal(nil, []byte("plaintext"))
	boxKey, err := opener.Key(env)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, bytes.Clone(boxKey[:]))
	assertNoSecret(t, "box.Opener", formatted(t, opener, allVerbs), secrets)
	assertNoSecret(t, "box.Sealer", formatted(t, sealer, allVerbs), secrets)
	assertNoSecret(t, "box.BoxKey", formatted(t, boxKey, allVerbs), secrets)

	r := openFixtureKey(t, "bupstash-0.12.1/repo", "bupstash-0.12.1/keys/primary.key")
	items, err := r.Items(t.Context())
	if err != nil || len(items) == 0 {
		t.Fatalf("%d items, %v", len(items), err)
	}
	it := items[0]
	data, index := it.hashParts()
	itemSecrets := append(append([][]byte(nil), secrets...), data[:], index[:])
	assertNoSecret(t, "*Item", formatted(t, it, structVerbs), itemSecrets)
	assertNoSecret(t, "Item", formatted(t, *it, structVerbs), itemSecrets)
	assertNoSecret(t, "*Repository", formatted(t, r, structVerbs), secrets)
}

// A Key not made by ParseKey holds nothing and can do nothing.
func TestZeroKey(t *testing.T) {
	var k Key
	if k.CanListItems() || k.CanListContents() || k.CanReadData() || k.IsPrimary() || fmt.Sprint(k) != "bupstash.Key(none)" {
		t.Fatalf("zero key: %v", k)
	}
	if _, err := New(memStore{}, &k, Options{}); err == nil {
		t.Fatal("a repository opened with a zero key")
	}
}
