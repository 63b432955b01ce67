package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/authmesh/authmesh/pkg/platform/mesh"
)

// natsCredentialRE matches the names of variables that would hand a process
// a static NATS credential: a user, password, token, creds file or seed. The
// servers' TTS_NATS_NKEY and TTS_SYS_NKEY are public keys, not credentials.
var natsCredentialRE = regexp.MustCompile(`NATS_(USER|PASSWORD|TOKEN|CREDS|NKEY_SEED)$|_SEED$`)

func isNATSCredential(name string) bool { return natsCredentialRE.MatchString(name) }

// checkNoNATSCredential fails for any variable in env that is a NATS
// credential: a workload's only credential is its Auth0 client secret.
func checkNoNATSCredential(t *testing.T, who string, env map[string]string) {
	t.Helper()
	for name := range env {
		if isNATSCredential(name) {
			t.Errorf("%s: env %s is a static NATS credential; it connects with its client-credentials token (auth callout)", who, name)
		}
	}
}

// seedRE matches an nkey seed of any kind (58 characters, S then the type).
var seedRE = regexp.MustCompile(`\bS[AUXOCNP][A-Z2-7]{56}\b`)

// staticCredentialRE matches what the static-password setup used: the
// variables, the Secret keys, the password files and the dev passwords.
var staticCredentialRE = regexp.MustCompile(`NATS_USER|NATS_PASSWORD|nats-password|nats-dev-secret|passwords(-env)?\.conf`)

// deploymentFiles are every file that configures a deployment: compose and
// its smoke test, the Kubernetes bases, the NATS configuration and image.
func deploymentFiles(t *testing.T) []string {
	t.Helper()
	files := []string{filepath.Join(root, "docker-compose.yml"), filepath.Join(root, "deploy", "compose-smoke.sh")}
	for _, pattern := range []string{"deploy/k8s/*/*", "deploy/nats/*"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 30 {
		t.Fatalf("found only %d deployment files", len(files))
	}
	return files
}

// TestNoStaticNATSCredential reads every deployment file as text (anchors,
// comments and all): no NATS user or password of any workload, no password
// file, and no nkey seed. The TTS gets its seeds from a Secret created out
// of band in Kubernetes and its development defaults in compose, so no
// seed is written in any of them.
func TestNoStaticNATSCredential(t *testing.T) {
	t.Parallel()
	for _, f := range deploymentFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(f, root+"/")
		for _, m := range staticCredentialRE.FindAllString(string(b), -1) {
			t.Errorf("%s: %q: a static NATS credential of the password era", rel, m)
		}
		for _, m := range seedRE.FindAllString(string(b), -1) {
			t.Errorf("%s: holds an nkey seed (%.4s…)", rel, m)
		}
		if filepath.Dir(f) == filepath.Join(root, "deploy", "nats") {
			// The one password: the cluster's, which routes present
			// (from the environment), not a user of any account.
			for _, m := range regexp.MustCompile(`(?m)^\s*password\s*:.*$`).FindAllString(string(b), -1) {
				if strings.TrimSpace(m) != "password: $NATS_ROUTE_PASSWORD" {
					t.Errorf("%s: a NATS user with a password (%s)", rel, strings.TrimSpace(m))
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "nats", "passwords.conf")); err == nil {
		t.Error("deploy/nats/passwords.conf still exists")
	}
}

// TestOnlyTheTTSHoldsSeeds: across every Kubernetes base, the one container
// given a seed (or any NATS credential) is the TTS's, and only from a Secret.
func TestOnlyTheTTSHoldsSeeds(t *testing.T) {
	t.Parallel()
	var seen int
	for _, base := range []string{"users", "orders", "billing", "tts", "nats", "devtenant"} {
		o := build(t, base)
		type workload struct {
			kind, name string
			env        []string
			fromSecret map[string]bool
		}
		var ws []workload
		add := func(kind, name string, pod corev1.PodSpec) {
			w := workload{kind: kind, name: name, fromSecret: map[string]bool{}}
			for _, c := range pod.Containers {
				for _, e := range c.Env {
					w.env = append(w.env, e.Name)
					w.fromSecret[e.Name] = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
				}
			}
			ws = append(ws, w)
		}
		for name, d := range o.deployments {
			add("Deployment", name, d.Spec.Template.Spec)
		}
		for name, ss := range o.statefulSets {
			add("StatefulSet", name, ss.Spec.Template.Spec)
		}
		for _, w := range ws {
			for _, name := range w.env {
				if !isNATSCredential(name) {
					continue
				}
				switch {
				case w.name != platformTTS:
					t.Errorf("%s %s gets %s: only the TTS holds NATS credentials (the callout's seeds)", w.kind, w.name, name)
				case !strings.HasSuffix(name, "_SEED") || !w.fromSecret[name]:
					t.Errorf("the TTS gets %s other than as a seed from a Secret", name)
				default:
					seen++
				}
			}
		}
		for name, cm := range o.configMaps {
			for k, v := range cm.Data {
				if isNATSCredential(k) || seedRE.MatchString(v) || staticCredentialRE.MatchString(v) {
					t.Errorf("ConfigMap %s key %s holds a NATS credential", name, k)
				}
			}
		}
	}
	if seen != 4 {
		t.Errorf("the TTS gets %d seeds from its Secret, want 4: the checks above ran on nothing", seen)
	}
}

const platformTTS = "tts"

// checkCalloutConfig asserts the auth callout in an accounts.conf: the
// issuer and xkey from the variables the servers get, the callout's account,
// the TTS's two nkey users as the only ones bypassing it, and the time a
// connection has to authenticate; no user has a password.
func checkCalloutConfig(t *testing.T, accounts string) {
	t.Helper()
	m := regexp.MustCompile(`(?s)authorization\s*\{([^{}]*)auth_callout\s*\{([^}]*)\}`).FindStringSubmatch(accounts)
	if m == nil {
		t.Fatal("accounts.conf has no authorization { auth_callout { ... } }")
	}
	// The callout's answer must fit in the time a connection has to
	// authenticate (nats-server's 2 s default timed out under load).
	if want := fmt.Sprintf("timeout: %d", mesh.AuthTimeoutSeconds); !regexp.MustCompile(`(?m)^\s*` + want + `\s*$`).MatchString(m[1]) {
		t.Errorf("authorization lacks %q:\n%s", want, m[1])
	}
	block := m[2]
	for _, want := range []string{
		"issuer: $" + mesh.IssuerVar,
		"xkey: $" + mesh.XKeyVar,
		"account: " + mesh.CalloutWorkload().Account,
		fmt.Sprintf("auth_users: [ $%s, $%s ]", mesh.ServiceNKeyVar, mesh.SystemNKeyVar),
	} {
		if !strings.Contains(block, want) {
			t.Errorf("auth_callout lacks %q:\n%s", want, block)
		}
	}
	for _, want := range []string{"nkey: $" + mesh.ServiceNKeyVar, "nkey: $" + mesh.SystemNKeyVar} {
		if strings.Count(accounts, want) != 1 {
			t.Errorf("accounts.conf: want exactly one user %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*(password|user)\s*:`).MatchString(accounts) {
		t.Error("accounts.conf has a user or password entry: every connection but the TTS's goes through the callout")
	}
}

// TestCalloutConfig checks the NATS configuration every deployment loads
// (make run, compose and the nats image; Kubernetes' is checked in
// TestNATSBase): the callout is configured, and the development keys.conf
// holds the public halves of the seeds the TTS uses by default, so the two
// agree without anyone copying a key.
func TestCalloutConfig(t *testing.T) {
	t.Parallel()
	accounts, err := os.ReadFile(filepath.Join(root, "deploy", "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	checkCalloutConfig(t, string(accounts))
	if !strings.Contains(string(accounts), "include keys.conf") {
		t.Error("accounts.conf does not include keys.conf")
	}
	keysConf, err := os.ReadFile(filepath.Join(root, "deploy", "nats", "keys.conf"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := mesh.DevKeys.Public()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range pub.Vars() {
		if !strings.Contains(string(keysConf), fmt.Sprintf("%s: %q", v[0], v[1])) {
			t.Errorf("deploy/nats/keys.conf does not set %s to the development key %s", v[0], v[1])
		}
	}
	df, err := os.ReadFile(filepath.Join(root, "deploy", "nats", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	copyLine := regexp.MustCompile(`(?m)^COPY (.*) /etc/nats/$`).FindSubmatch(df)
	if copyLine == nil {
		t.Fatal("deploy/nats/Dockerfile copies nothing to /etc/nats/")
	}
	for _, f := range []string{"accounts.conf", "keys.conf", "nats.conf", "cluster.conf"} {
		if !strings.Contains(" "+string(copyLine[1])+" ", " deploy/nats/"+f+" ") {
			t.Errorf("the nats image lacks deploy/nats/%s in /etc/nats", f)
		}
	}
	for _, f := range []string{"nats.conf", "cluster.conf", "cluster-k8s.conf"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "nats", f))
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?s)websocket\s*\{[^}]*listen:\s*"[0-9.]+:8405"[^}]*no_tls:\s*true`).Match(b) {
			t.Errorf("deploy/nats/%s has no websocket listener on 8405", f)
		}
	}
}
