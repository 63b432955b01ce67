package mesh

import (
	"fmt"
	"slices"

	"github.com/nats-io/nkeys"
)

// CalloutSubject is where nats-server asks the auth callout to authorize a
// connection (in the callout's account).
const CalloutSubject = "$SYS.REQ.USER.AUTH"

// Variables the server configuration takes the callout's public keys from
// (keys.conf in development, the environment in Kubernetes).
const (
	IssuerVar      = "AUTHMESH_CALLOUT_ISSUER" // account key signing the users the callout issues
	XKeyVar        = "AUTHMESH_CALLOUT_XKEY"   // curve key callout requests are sealed to
	ServiceNKeyVar = "TTS_NATS_NKEY"           // the TTS's own user (callout and exchange)
	SystemNKeyVar  = "TTS_SYS_NKEY"            // the TTS's system user (kicks revoked connections)
)

// SystemInboxPrefix is the reply prefix of the TTS's system connection.
const SystemInboxPrefix = "_INBOX_tts_sys"

// Keys are the callout's four seeds. Only the Transaction Token Service holds
// them (TTS_CALLOUT_ISSUER_SEED, TTS_CALLOUT_XKEY_SEED, TTS_NATS_SEED,
// TTS_SYS_NATS_SEED); the servers know their public halves.
type Keys struct {
	Issuer  string // account seed (SA...)
	XKey    string // curve seed (SX...)
	Service string // user seed (SU...) of the TTS's connection in its account
	System  string // user seed (SU...) of its connection in the system account
}

// DevKeys are the local stack's callout keys (make run, compose, tests).
// Published, like every dev secret: with AUTH0_DOMAIN set none applies.
var DevKeys = Keys{
	Issuer:  "SAAEBR6XI6FFUOBQ5WTNXASXSE7TG2L3BEFNGHTSUISEEZT35KGPU443KA",
	XKey:    "SXAA24HEYLQPNHS7EPPFDW2ONP5G6XHHPURUY4YUIIQMHZARLL2Z6AI7IE",
	Service: "SUANJT4H5INKZGEKNZOH5NDPQ7VF245H5IN2MMGAC57PHZYEYMQPDFQR3Q",
	System:  "SUAAYZ6V4BAZTZSGMPD4EITF6SRJ634DCZA3TE4Y2DB6EY42TFKLPUYA2E",
}

// PublicKeys are the public halves of Keys, as the server configuration
// names them.
type PublicKeys struct {
	Issuer, XKey, Service, System string
}

// Public derives the public keys, checking each seed is of its kind.
func (k Keys) Public() (PublicKeys, error) {
	var pub PublicKeys
	for _, s := range []struct {
		name, seed string
		want       nkeys.PrefixByte
		dst        *string
	}{
		{"issuer", k.Issuer, nkeys.PrefixByteAccount, &pub.Issuer},
		{"xkey", k.XKey, nkeys.PrefixByteCurve, &pub.XKey},
		{"service", k.Service, nkeys.PrefixByteUser, &pub.Service},
		{"system", k.System, nkeys.PrefixByteUser, &pub.System},
	} {
		kp, err := nkeys.FromSeed([]byte(s.seed))
		if err != nil {
			return PublicKeys{}, fmt.Errorf("mesh: callout %s seed: %w", s.name, err)
		}
		p, err := kp.PublicKey()
		if err != nil {
			return PublicKeys{}, fmt.Errorf("mesh: callout %s seed: %w", s.name, err)
		}
		if nkeys.Prefix(p) != s.want {
			return PublicKeys{}, fmt.Errorf("mesh: callout %s seed is a %s key", s.name, nkeys.Prefix(p))
		}
		*s.dst = p
	}
	return pub, nil
}

// Vars are the configuration variables and their values.
func (p PublicKeys) Vars() [][2]string {
	return [][2]string{
		{IssuerVar, p.Issuer}, {XKeyVar, p.XKey}, {ServiceNKeyVar, p.Service}, {SystemNKeyVar, p.System},
	}
}

// CalloutWorkload is the workload answering the auth callout.
func CalloutWorkload() Workload {
	i := slices.IndexFunc(Workloads, func(w Workload) bool { return w.AnswersCallout })
	return Workloads[i]
}

// SystemPermissions are the allow lists of the TTS's system connection:
// find a principal's connections on every server and kick them, nothing
// else.
func SystemPermissions() Permissions {
	return Permissions{
		Publish:   []string{"$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.SERVER.*.KICK"},
		Subscribe: []string{SystemInboxPrefix + ".>"},
	}
}
