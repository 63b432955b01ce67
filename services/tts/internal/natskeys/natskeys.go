// Package natskeys creates the NATS auth callout's keys for a deployment: the
// four seeds only the Transaction Token Service holds, and their public
// halves, which the NATS servers are configured with. It writes them as two
// env files, one per audience, so neither has to be copied out of the other:
//
//	tts-credentials.env    (0600) TTS_CALLOUT_ISSUER_SEED, TTS_CALLOUT_XKEY_SEED,
//	                              TTS_NATS_SEED, TTS_SYS_NATS_SEED
//	nats-callout-keys.env  (0644) AUTHMESH_CALLOUT_ISSUER, AUTHMESH_CALLOUT_XKEY,
//	                              TTS_NATS_NKEY, TTS_SYS_NKEY
//
// Both load with kubectl's --from-env-file (the Secret tts-credentials and the
// ConfigMap nats-callout-keys of deploy/k8s).
package natskeys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// File names in the output directory.
const (
	SeedsFile  = "tts-credentials.env"
	PublicFile = "nats-callout-keys.env"
)

// Seed variables, as the TTS reads them (pkg/platform, prefix TTS_).
const (
	IssuerSeedVar  = "TTS_CALLOUT_ISSUER_SEED"
	XKeySeedVar    = "TTS_CALLOUT_XKEY_SEED"
	ServiceSeedVar = "TTS_NATS_SEED"
	SystemSeedVar  = "TTS_SYS_NATS_SEED"
)

// Generate creates fresh keys: an account key issuing the callout's users, a
// curve key sealing its requests, and the TTS's two user keys.
func Generate() (mesh.Keys, error) {
	var k mesh.Keys
	for _, g := range []struct {
		create func() (nkeys.KeyPair, error)
		dst    *string
	}{
		{nkeys.CreateAccount, &k.Issuer},
		{nkeys.CreateCurveKeys, &k.XKey},
		{nkeys.CreateUser, &k.Service},
		{nkeys.CreateUser, &k.System},
	} {
		kp, err := g.create()
		if err != nil {
			return mesh.Keys{}, fmt.Errorf("natskeys: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return mesh.Keys{}, fmt.Errorf("natskeys: %w", err)
		}
		*g.dst = string(seed)
	}
	return k, nil
}

// SeedVars are the TTS's variables and their values.
func SeedVars(k mesh.Keys) [][2]string {
	return [][2]string{
		{IssuerSeedVar, k.Issuer}, {XKeySeedVar, k.XKey}, {ServiceSeedVar, k.Service}, {SystemSeedVar, k.System},
	}
}

// Write writes k's two env files into dir, which must exist. It never
// replaces a file: the keys in use are rotated deliberately, not by a rerun.
// It returns the public keys it wrote.
func Write(dir string, k mesh.Keys) (mesh.PublicKeys, error) {
	pub, err := k.Public()
	if err != nil {
		return mesh.PublicKeys{}, fmt.Errorf("natskeys: %w", err)
	}
	for _, name := range []string{SeedsFile, PublicFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			if err == nil {
				err = fs.ErrExist
			}
			return mesh.PublicKeys{}, fmt.Errorf("natskeys: %s: %w", filepath.Join(dir, name), err)
		}
	}
	if err := writeNew(filepath.Join(dir, SeedsFile), 0o600,
		"# The NATS auth callout's seeds: the Transaction Token Service's alone (Secret tts-credentials).\n", SeedVars(k)); err != nil {
		return mesh.PublicKeys{}, err
	}
	if err := writeNew(filepath.Join(dir, PublicFile), 0o644,
		"# The public halves of "+SeedsFile+", for the NATS servers (ConfigMap nats-callout-keys).\n", pub.Vars()); err != nil {
		_ = os.Remove(filepath.Join(dir, SeedsFile)) // half a pair is of no use; let a rerun start afresh
		return mesh.PublicKeys{}, err
	}
	return pub, nil
}

func writeNew(path string, mode fs.FileMode, header string, vars [][2]string) error {
	var b strings.Builder
	b.WriteString(header)
	for _, v := range vars {
		fmt.Fprintf(&b, "%s=%s\n", v[0], v[1])
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("natskeys: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("natskeys: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("natskeys: %s: %w", path, err)
	}
	return nil
}
