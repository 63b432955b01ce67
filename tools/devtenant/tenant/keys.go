package tenant

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const keysFileName = "keys.json"

// ErrNoPreviousKey is returned by RevokePreviousKey when there is no previous
// key: only the previous key can be revoked, as in Auth0.
var ErrNoPreviousKey = errors.New("devtenant: there is no previous signing key to revoke")

// signingKey is one RSA key in Auth0's lifecycle: next → current → previous → revoked.
type signingKey struct {
	KID          string     `json:"kid"`
	PrivateKey   string     `json:"private_key,omitempty"` // PKCS#8 PEM; dropped on revocation
	Cert         string     `json:"cert"`                  // self-signed, PEM
	State        string     `json:"state"`                 // current | next | previous | revoked
	CreatedAt    time.Time  `json:"created_at"`
	CurrentSince *time.Time `json:"current_since,omitempty"`
	CurrentUntil *time.Time `json:"current_until,omitempty"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`

	priv *rsa.PrivateKey
	cert *x509.Certificate
}

func (k *signingKey) publicJWK() jose.JSONWebKey {
	sha1sum := sha1.Sum(k.cert.Raw)
	sha256sum := sha256.Sum256(k.cert.Raw)
	return jose.JSONWebKey{
		Key: k.cert.PublicKey, KeyID: k.KID, Algorithm: string(jose.RS256), Use: "sig",
		Certificates:                []*x509.Certificate{k.cert},
		CertificateThumbprintSHA1:   sha1sum[:],
		CertificateThumbprintSHA256: sha256sum[:],
	}
}

// keyStore holds the signing keys and persists every change before it is visible.
type keyStore struct {
	mu   sync.RWMutex
	path string
	now  func() time.Time
	keys []*signingKey // current, next, previous (if any), revoked...
	// changes counts rotations and revocations, so that what was derived
	// from the published keys knows when to derive it again.
	changes uint64
}

func openKeyStore(dataDir string, now func() time.Time) (*keyStore, error) {
	ks := &keyStore{path: filepath.Join(dataDir, keysFileName), now: now}
	raw, err := os.ReadFile(ks.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		cur, err := newSigningKey(now(), "current")
		if err != nil {
			return nil, err
		}
		next, err := newSigningKey(now(), "next")
		if err != nil {
			return nil, err
		}
		t := now().UTC()
		cur.CurrentSince = &t
		ks.keys = []*signingKey{cur, next}
		if err := ks.save(); err != nil {
			return nil, err
		}
		return ks, nil
	case err != nil:
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	var doc struct {
		Keys []*signingKey `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("signing keys %s: %v; fix: delete the file to start with new keys (tokens already issued stop verifying)", ks.path, err)
	}
	counts := map[string]int{}
	for _, k := range doc.Keys {
		counts[k.State]++
		if err := k.decode(); err != nil {
			return nil, fmt.Errorf("signing keys %s: key %s: %v; fix: delete the file to start with new keys", ks.path, k.KID, err)
		}
	}
	if counts["current"] != 1 || counts["next"] != 1 || counts["previous"] > 1 {
		return nil, fmt.Errorf("signing keys %s: need exactly one current and one next key, got %v; fix: delete the file to start with new keys", ks.path, counts)
	}
	ks.keys = doc.Keys
	return ks, nil
}

func (k *signingKey) decode() error {
	block, _ := pem.Decode([]byte(k.Cert))
	if block == nil {
		return errors.New("certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	k.cert = cert
	if k.State == "revoked" {
		return nil
	}
	block, _ = pem.Decode([]byte(k.PrivateKey))
	if block == nil {
		return errors.New("private key is not PEM")
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	rk, ok := priv.(*rsa.PrivateKey)
	if !ok || rk.N.BitLen() < 2048 {
		return errors.New("private key is not RSA-2048 or larger")
	}
	k.priv = rk
	return nil
}

func newSigningKey(now time.Time, state string) (*signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "devtenant"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, fmt.Errorf("self-sign signing key: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	// The kid is the RFC 7638 thumbprint: stable, unique, and derived from the key alone.
	tp, err := (&jose.JSONWebKey{Key: &priv.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &signingKey{
		KID:        base64.RawURLEncoding.EncodeToString(tp),
		PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8})),
		Cert:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		State:      state,
		CreatedAt:  now.UTC(),
		priv:       priv,
		cert:       cert,
	}, nil
}

// save writes the keys atomically (temp file, fsync, rename) with mode 0600. Caller holds mu or owns ks.
func (ks *keyStore) save() error {
	b, err := json.MarshalIndent(struct {
		Keys []*signingKey `json:"keys"`
	}{ks.keys}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(ks.path, b)
}

func (ks *keyStore) byState(state string) *signingKey {
	for _, k := range ks.keys {
		if k.State == state {
			return k
		}
	}
	return nil
}

// sign signs claims with the current key.
func (ks *keyStore) sign(claims any) (string, error) { return ks.signTyped("JWT", claims) }

// signTyped signs claims with the current key under header typ.
func (ks *keyStore) signTyped(typ string, claims any) (string, error) {
	ks.mu.RLock()
	cur := ks.byState("current")
	ks.mu.RUnlock()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: cur.priv, KeyID: cur.KID}},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)),
	)
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// verificationKeys are the keys published in the JWKS.
func (ks *keyStore) jwks() jose.JSONWebKeySet {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	var set jose.JSONWebKeySet
	for _, state := range []string{"current", "next", "previous"} {
		if k := ks.byState(state); k != nil {
			set.Keys = append(set.Keys, k.publicJWK())
		}
	}
	return set
}

// version changes whenever the published keys do.
func (ks *keyStore) version() uint64 {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.changes
}

// rotate makes next current, current previous, drops an unrevoked previous
// (as Auth0 does: it leaves the JWKS) and creates a new next key.
func (ks *keyStore) rotate() (*signingKey, error) {
	fresh, err := newSigningKey(ks.now(), "next")
	if err != nil {
		return nil, err
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	now := ks.now().UTC()
	old := make([]*signingKey, len(ks.keys))
	for i, k := range ks.keys {
		c := *k
		old[i] = &c
	}
	var kept []*signingKey
	for _, k := range ks.keys {
		switch k.State {
		case "previous":
			k.State, k.PrivateKey, k.RevokedAt = "revoked", "", &now
		case "current":
			k.State, k.CurrentUntil = "previous", &now
		case "next":
			k.State, k.CurrentSince = "current", &now
		}
		kept = append(kept, k)
	}
	ks.keys = append(kept, fresh)
	if err := ks.save(); err != nil {
		ks.keys = old
		return nil, err
	}
	ks.changes++
	return ks.byState("current"), nil
}

func (ks *keyStore) revokePrevious(kid string) (*signingKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	prev := ks.byState("previous")
	if prev == nil || (kid != "" && prev.KID != kid) {
		return nil, ErrNoPreviousKey
	}
	now := ks.now().UTC()
	before := *prev
	prev.State, prev.PrivateKey, prev.RevokedAt = "revoked", "", &now
	if err := ks.save(); err != nil {
		*prev = before
		return nil, err
	}
	ks.changes++
	return prev, nil
}

func (ks *keyStore) list() []signingKey {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	out := make([]signingKey, 0, len(ks.keys))
	for _, k := range ks.keys {
		out = append(out, *k)
	}
	return out
}

// writeFileAtomic replaces path with data so readers never see a partial file.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
