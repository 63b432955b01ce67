// Package keys holds the Transaction Token Service's signing keys: a file of
// ES256 (P-256) private keys in JWK form, one current (signs), one next
// (published ahead of use, so every validator knows it before a token signed
// with it arrives) and up to MaxPrevious previous ones (still published, so
// tokens in flight and in queues stay verifiable after a rotation).
//
// Several replicas share one file (a Kubernetes Secret, a compose volume);
// each reloads it when it changes, so a rotation needs no restart.
package keys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxPrevious is how many retired keys a rotation keeps published.
const MaxPrevious = 2

// File is the on-disk form.
type File struct {
	Current string            `json:"current"` // kid of the signing key
	Next    string            `json:"next"`    // kid of the key the next rotation promotes
	Keys    []jose.JSONWebKey `json:"keys"`    // private keys: current, next and previous
}

// Set is a validated key file.
type Set struct {
	file    File
	current jose.JSONWebKey
	signer  jose.Signer
}

// New returns a fresh set: a current and a next key.
func New() (*Set, error) {
	cur, err := newKey()
	if err != nil {
		return nil, err
	}
	next, err := newKey()
	if err != nil {
		return nil, err
	}
	return fromFile(File{Current: cur.KeyID, Next: next.KeyID, Keys: []jose.JSONWebKey{cur, next}})
}

// Load reads and validates a key file.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("keys: %s is not a key file: %w", path, err)
	}
	s, err := fromFile(f)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	return s, nil
}

// LoadOrCreate loads path, or creates it with a fresh set when it does not
// exist (the local stack; production passes a provisioned file).
func LoadOrCreate(path string) (*Set, error) {
	s, err := Load(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	if s, err = New(); err != nil {
		return nil, err
	}
	return s, s.Save(path)
}

func fromFile(f File) (*Set, error) {
	if len(f.Keys) == 0 || f.Current == "" || f.Next == "" || f.Current == f.Next {
		return nil, errors.New("a key file needs distinct current and next keys")
	}
	s := &Set{file: f}
	seen := map[string]bool{}
	for _, k := range f.Keys {
		priv, ok := k.Key.(*ecdsa.PrivateKey)
		switch {
		case !ok || priv.Curve != elliptic.P256():
			return nil, fmt.Errorf("key %q is not a P-256 private key", k.KeyID)
		case k.KeyID == "" || seen[k.KeyID]:
			return nil, fmt.Errorf("key id %q is empty or repeated", k.KeyID)
		}
		seen[k.KeyID] = true
		if k.KeyID == f.Current {
			s.current = k
		}
	}
	if !seen[f.Current] || !seen[f.Next] {
		return nil, errors.New("the current or next key is missing")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.current.Key},
		(&jose.SignerOptions{}).WithType("txntoken+jwt").WithHeader("kid", s.current.KeyID))
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	s.signer = signer
	return s, nil
}

// Rotate returns the set after one rotation: next becomes current, current
// joins the previous keys (the oldest beyond MaxPrevious leave), and a new
// next key is made. Run it once, wait for validators to pick up the new next
// key (their JWKS refresh, minutes), then rotate again to retire a key.
func (s *Set) Rotate() (*Set, error) {
	fresh, err := newKey()
	if err != nil {
		return nil, err
	}
	f := File{Current: s.file.Next, Next: fresh.KeyID}
	var previous []jose.JSONWebKey
	for _, k := range s.file.Keys {
		switch k.KeyID {
		case s.file.Next:
			f.Keys = append(f.Keys, k)
		case s.file.Current:
			previous = append([]jose.JSONWebKey{k}, previous...)
		default:
			previous = append(previous, k)
		}
	}
	f.Keys = append(f.Keys, fresh)
	f.Keys = append(f.Keys, previous[:min(len(previous), MaxPrevious)]...)
	return fromFile(f)
}

// Save writes the set to path atomically, readable by its owner only.
func (s *Set) Save(path string) error {
	b, err := json.MarshalIndent(s.file, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".keys-*")
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("keys: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// CurrentKID is the kid of the signing key.
func (s *Set) CurrentKID() string { return s.current.KeyID }

// KIDs returns every published kid.
func (s *Set) KIDs() []string {
	out := make([]string, 0, len(s.file.Keys))
	for _, k := range s.file.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// JWKS is the public half of every key, current first.
func (s *Set) JWKS() jose.JSONWebKeySet {
	keys := slices.Clone(s.file.Keys)
	slices.SortStableFunc(keys, func(a, b jose.JSONWebKey) int {
		return rank(a.KeyID, s.file) - rank(b.KeyID, s.file)
	})
	var set jose.JSONWebKeySet
	for _, k := range keys {
		pub := k.Public()
		pub.Use, pub.Algorithm = "sig", string(jose.ES256)
		set.Keys = append(set.Keys, pub)
	}
	return set
}

func rank(kid string, f File) int {
	switch kid {
	case f.Current:
		return 0
	case f.Next:
		return 1
	}
	return 2
}

// Sign signs payload (a JSON object) as a transaction token with the current
// key: header alg ES256, typ txntoken+jwt, kid.
func (s *Set) Sign(payload []byte) (string, error) {
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("keys: sign: %w", err)
	}
	return jws.CompactSerialize()
}

func newKey() (jose.JSONWebKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("keys: generate: %w", err)
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	return jose.JSONWebKey{Key: k, KeyID: hex.EncodeToString(id[:]), Algorithm: string(jose.ES256), Use: "sig"}, nil
}
