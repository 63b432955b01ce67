package keys

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func TestRotateKeepsTokensVerifiable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	s, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	again, err := LoadOrCreate(path)
	if err != nil || again.CurrentKID() != s.CurrentKID() {
		t.Fatalf("reload changed the keys: %v", err)
	}
	tok, err := s.Sign([]byte(`{"sub":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	next := s.file.Next
	r, err := s.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if r.CurrentKID() != next {
		t.Fatalf("rotation did not promote the published next key")
	}
	// The old current key is still published: the token signed before the
	// rotation verifies against the new JWKS.
	verify(t, r.JWKS(), tok)
	for range MaxPrevious + 1 {
		if r, err = r.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	if slices.Contains(r.KIDs(), s.CurrentKID()) {
		t.Fatal("a key older than MaxPrevious rotations is still published")
	}
	if len(r.KIDs()) != 2+MaxPrevious {
		t.Fatalf("published %d keys", len(r.KIDs()))
	}
}

func TestJWKSHasNoPrivateParts(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s.JWKS())
	if strings.Contains(string(b), `"d"`) {
		t.Fatalf("JWKS leaks a private key: %s", b)
	}
	var hdr struct{ Typ, Alg, Kid string }
	tok, _ := s.Sign([]byte(`{}`))
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	hdr.Typ, _ = jws.Signatures[0].Protected.ExtraHeaders["typ"].(string)
	if hdr.Typ != "txntoken+jwt" || jws.Signatures[0].Protected.KeyID != s.CurrentKID() {
		t.Fatalf("header %+v", jws.Signatures[0].Protected)
	}
}

func TestLoadRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	s, _ := New()
	rsaLike := s.file
	rsaLike.Keys = rsaLike.Keys[:1] // next missing
	for name, f := range map[string]any{
		"not json":     "garbage",
		"next missing": rsaLike,
		"public only":  File{Current: "a", Next: "b", Keys: []jose.JSONWebKey{s.JWKS().Keys[0], s.JWKS().Keys[1]}},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		b, _ := json.Marshal(f)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func verify(t *testing.T, set jose.JSONWebKeySet, tok string) {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(jws.Signatures[0].Protected.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid not published")
	}
	if _, err := jws.Verify(keys[0]); err != nil {
		t.Fatalf("verify: %v", err)
	}
}
