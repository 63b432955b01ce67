package deploy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	"sigs.k8s.io/yaml"
)

// composeService holds the keys docker-compose.yml may use; strict decoding
// rejects any other (a misspelt key is silently ignored by Compose v1).
type composeService struct {
	Build struct {
		Context    string            `json:"context"`
		Dockerfile string            `json:"dockerfile"`
		Args       map[string]string `json:"args"`
	} `json:"build"`
	Command     []string                     `json:"command"`
	Environment map[string]string            `json:"environment"`
	Ports       []string                     `json:"ports"`
	Volumes     []string                     `json:"volumes"`
	DependsOn   map[string]map[string]string `json:"depends_on"`
	Restart     string                       `json:"restart"`
	Profiles    []string                     `json:"profiles"`
}

type composeFile struct {
	Version  string                     `json:"version"`
	Services map[string]composeService  `json:"services"`
	Volumes  map[string]json.RawMessage `json:"volumes"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	return loadComposeWith(t, nil)
}

// composeVarRE is the one form of interpolation docker-compose.yml uses.
var composeVarRE = regexp.MustCompile(`\$\{(\w+):-([^}]*)\}`)

// loadComposeWith reads docker-compose.yml as Compose does with the shell
// variables vars: ${VAR:-default} is VAR's value, else the default.
func loadComposeWith(t *testing.T, vars map[string]string) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	b = composeVarRE.ReplaceAllFunc(b, func(m []byte) []byte {
		sub := composeVarRE.FindSubmatch(m)
		if v, ok := vars[string(sub[1])]; ok && v != "" {
			return []byte(v)
		}
		return sub[2]
	})
	// Extension fields (x-*) are YAML anchors only; merge keys are resolved by
	// the YAML decoder, so drop them after resolution.
	var generic map[string]any
	if err := yaml.Unmarshal(b, &generic); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for k := range generic {
		if strings.HasPrefix(k, "x-") {
			delete(generic, k)
		}
	}
	j, err := json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.UnmarshalStrict(j, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f
}

func TestCompose(t *testing.T) {
	t.Parallel()
	f := loadCompose(t)
	// 2.x is the format where docker-compose v1 supports health conditions; Compose v2 accepts it too.
	if !strings.HasPrefix(f.Version, "2.") {
		t.Errorf("version %q: want a 2.x format (health-gated depends_on in compose v1 and v2)", f.Version)
	}
	want := []string{"billing", "devtenant", "jaeger", "nats-1", "nats-2", "nats-3", "orders", "tts", "users", "web"}
	if got := keys(f.Services); !slices.Equal(got, want) {
		t.Fatalf("services = %v, want %v", got, want)
	}
	for name, s := range f.Services {
		if s.Build.Dockerfile == "" || s.Build.Context != "." {
			t.Errorf("%s: must build from the repository root with its Dockerfile (no registry to pull from)", name)
		}
	}

	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			t.Parallel()
			s := f.Services[svc.name]
			known := knownEnv(t, svc.name)
			for name := range s.Environment {
				if !known[name] {
					t.Errorf("environment %s is not read by pkg/platform", name)
				}
			}
			cfg, err := platform.LoadConfig(svc.name, func(k string) string { return s.Environment[k] })
			if err != nil {
				t.Fatalf("the container's environment is rejected by pkg/platform: %v", err)
			}
			if cfg.Auth0.Issuer != "http://localhost:8400/" || cfg.Auth0.JWKSURL != "http://devtenant:8400/.well-known/jwks.json" ||
				cfg.Auth0.TokenURL != "http://devtenant:8400/oauth/token" {
				t.Errorf("auth0 = %+v: want the host issuer, keys and tokens from devtenant", cfg.Auth0)
			}
			if svc.name == "users" && cfg.Auth0.ManagementURL != "http://devtenant:8400/api/v2/" {
				t.Errorf("Management API URL = %q", cfg.Auth0.ManagementURL)
			}
			if cfg.NATSReplicas != 3 {
				t.Errorf("NATS replicas %d, want 3", cfg.NATSReplicas)
			}
			// NATS accepts it by its client-credentials token (the TTS's auth
			// callout): its client secret is its one credential.
			checkNoNATSCredential(t, svc.name, s.Environment)
			if cfg.Callout != (mesh.Keys{}) || cfg.ClientSecret != svc.name+"-service-dev-secret" {
				t.Errorf("want the dev client secret and no callout keys")
			}
			for i := 1; i <= 3; i++ {
				if !strings.Contains(cfg.NATSURL, fmt.Sprintf("nats://nats-%d:4222", i)) {
					t.Errorf("NATS URL %q lacks node nats-%d", cfg.NATSURL, i)
				}
			}
			if port := fmt.Sprintf("%d", svc.port); !slices.Equal(s.Ports, []string{"127.0.0.1:" + port + ":" + port}) || cfg.HTTPAddr != ":"+port {
				t.Errorf("ports %v, HTTP address %q: want %s on the host's loopback and in the container", s.Ports, cfg.HTTPAddr, port)
			}
			if cfg.Txn.JWKSURL != ttsJWKSInCompose {
				t.Errorf("AUTHMESH_TTS_JWKS_URL = %q, want the TTS by its service name, %s", cfg.Txn.JWKSURL, ttsJWKSInCompose)
			}
			for _, dep := range []string{"devtenant", "nats-1", "nats-2", "nats-3", "tts"} {
				if s.DependsOn[dep]["condition"] != "service_healthy" {
					t.Errorf("does not wait for %s to be healthy", dep)
				}
			}
			// The three services share one Dockerfile: the build args pick the binary and its port.
			if s.Build.Args["SERVICE"] != svc.name || s.Build.Args["PORT"] != fmt.Sprint(svc.port) {
				t.Errorf("build args %v: want SERVICE=%s PORT=%d", s.Build.Args, svc.name, svc.port)
			}
			df := checkDockerfile(t, filepath.Join(root, s.Build.Dockerfile), s.Build.Args, svc.port, "/app", "healthcheck")
			if !strings.Contains(df, "\nCOPY bin/"+svc.name+" /app\n") {
				t.Errorf("%s with %v does not copy bin/%s", s.Build.Dockerfile, s.Build.Args, svc.name)
			}
		})
	}
	t.Run("tts", func(t *testing.T) {
		t.Parallel()
		checkComposeTTS(t, f)
	})

	// The SPA's live updates: NATS over WebSocket on ws://localhost:8405.
	if got := f.Services["nats-1"].Ports; !slices.Equal(got, []string{"127.0.0.1:4222:4222", "127.0.0.1:8222:8222", "127.0.0.1:8405:8405"}) {
		t.Errorf("nats-1 ports %v, want the contract's 4222, 8222 and 8405 on the host's loopback", got)
	}
	for i := 1; i <= 3; i++ {
		n := f.Services[fmt.Sprintf("nats-%d", i)]
		if !slices.Contains(n.Command, "/etc/nats/cluster.conf") || !slices.Contains(n.Command, fmt.Sprintf("nats-%d", i)) {
			t.Errorf("nats-%d command %v: want cluster.conf and its own name", i, n.Command)
		}
		// Routes present the cluster password (cluster.conf refuses any
		// other): each to every node, the password from the environment
		// (compose's development default unless it is set).
		pw := cmp.Or(os.Getenv("NATS_ROUTE_PASSWORD"), "authmesh-dev-route-password")
		var want []string
		for j := 1; j <= 3; j++ {
			want = append(want, fmt.Sprintf("nats://route:%s@nats-%d:6222", pw, j))
		}
		if k := slices.Index(n.Command, "--routes"); k < 0 || k+1 >= len(n.Command) || n.Command[k+1] != strings.Join(want, ",") {
			t.Errorf("nats-%d command %v: want --routes %s", i, n.Command, strings.Join(want, ","))
		}
		if n.Environment["NATS_ROUTE_PASSWORD"] != pw {
			t.Errorf("nats-%d: NATS_ROUTE_PASSWORD %q, want the one its routes present", i, n.Environment["NATS_ROUTE_PASSWORD"])
		}
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("nats-%d", i)
		checkNoNATSCredential(t, name, f.Services[name].Environment)
	}
	for _, port := range []int32{4222, 8405} {
		checkDockerfile(t, filepath.Join(root, "deploy", "nats", "Dockerfile"), nil, port, "/httpprobe", "http://127.0.0.1:8222/healthz")
	}
	dt := f.Services["devtenant"]
	if !slices.Equal(dt.Ports, []string{"127.0.0.1:8400:8400"}) || dt.Environment["DEVTENANT_ISSUER"] != "http://localhost:8400/" {
		t.Errorf("devtenant ports %v issuer %q", dt.Ports, dt.Environment["DEVTENANT_ISSUER"])
	}
	checkDockerfile(t, filepath.Join(root, dt.Build.Dockerfile), dt.Build.Args, 8400, "/app", "healthcheck")
	web := f.Services["web"]
	if !slices.Equal(web.Ports, []string{"127.0.0.1:8404:8404"}) {
		t.Errorf("web ports %v, want the SPA on 8404", web.Ports)
	}
	checkDockerfile(t, filepath.Join(root, web.Build.Dockerfile), web.Build.Args, 8404, "/app", "healthcheck")

	// Every published port, of whatever service, is on the host's loopback:
	// the stack runs with published dev secrets.
	for name, svc := range f.Services {
		for _, p := range svc.Ports {
			host, rest, ok := strings.Cut(p, ":")
			if !ok || host != "127.0.0.1" || !strings.Contains(rest, ":") {
				t.Errorf("%s publishes %q: want 127.0.0.1:<host port>:<container port>", name, p)
			}
		}
	}
}

var (
	healthRE = regexp.MustCompile(`(?m)^HEALTHCHECK .*CMD (\[.*\])\s*$`)
	exposeRE = regexp.MustCompile(`(?m)^EXPOSE (.*)$`)
	argRE    = regexp.MustCompile(`(?m)^ARG (\w+)\s*$`)
)

// checkDockerfile asserts what builds offline and runs safely: FROM scratch
// only, no BuildKit syntax line, a numeric non-root user, an exec-form
// healthcheck, the port exposed. Every ARG must have a value in args (an
// unset one would silently expand to nothing); the checks, and the text
// returned, see the Dockerfile with the args substituted as docker build does.
func checkDockerfile(t *testing.T, path string, buildArgs map[string]string, port int32, healthArgs ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, m := range argRE.FindAllStringSubmatch(string(b), -1) {
		declared[m[1]] = true
		if buildArgs[m[1]] == "" {
			t.Errorf("%s: ARG %s has no build arg", path, m[1])
		}
	}
	df := os.Expand(string(b), func(name string) string {
		if !declared[name] {
			return "$" + name
		}
		return buildArgs[name]
	})
	for _, line := range strings.Split(df, "\n") {
		if strings.HasPrefix(line, "FROM ") && strings.TrimSpace(line) != "FROM scratch" {
			t.Errorf("%s: %q: only FROM scratch builds without a registry", path, line)
		}
		if strings.HasPrefix(strings.ReplaceAll(line, " ", ""), "#syntax=") {
			t.Errorf("%s: a syntax line makes BuildKit contact a registry", path)
		}
	}
	if !strings.Contains(df, "\nUSER 65532:65532\n") {
		t.Errorf("%s: want USER 65532:65532", path)
	}
	m := healthRE.FindStringSubmatch(df)
	if m == nil {
		t.Fatalf("%s: no exec-form HEALTHCHECK", path)
	}
	var args []string
	if err := json.Unmarshal([]byte(m[1]), &args); err != nil || !slices.Equal(args, healthArgs) {
		t.Errorf("%s: HEALTHCHECK %s, want %q", path, m[1], healthArgs)
	}
	e := exposeRE.FindStringSubmatch(df)
	if e == nil || !slices.Contains(strings.Fields(e[1]), fmt.Sprint(port)) {
		t.Errorf("%s: does not EXPOSE %d", path, port)
	}
	return df
}

// ttsJWKSInCompose is where the services fetch the TTS's keys inside compose.
const ttsJWKSInCompose = "http://tts:8406/.well-known/jwks.json"

// checkComposeTTS checks the Transaction Token Service's container: the
// development callout keys the cluster trusts, the tenant as the services see it, the
// workloads it serves by the client ids the services use, its dev key file on
// a volume the image lets uid 65532 write, and 8406 on the host's loopback.
func checkComposeTTS(t *testing.T, f composeFile) {
	s := f.Services["tts"]
	known := knownEnv(t, "tts")
	known["TTS_KEYS_FILE"] = true // read by the service itself (services/tts/internal/service.KeysFile)
	for name := range s.Environment {
		if !known[name] {
			t.Errorf("environment %s is not read by the TTS", name)
		}
	}
	cfg, err := platform.LoadConfig("tts", func(k string) string { return s.Environment[k] })
	if err != nil {
		t.Fatalf("the container's environment is rejected by pkg/platform: %v", err)
	}
	if cfg.Auth0.Issuer != "http://localhost:8400/" || cfg.Auth0.JWKSURL != "http://devtenant:8400/.well-known/jwks.json" ||
		cfg.Auth0.Audience != "https://api.authmesh.dev" {
		t.Errorf("auth0 = %+v: want the services' issuer and audience, keys from devtenant", cfg.Auth0)
	}
	// No seed in compose: the TTS answers the callout with the development
	// keys, whose public halves the nats image's keys.conf holds
	// (TestCalloutConfig).
	for name := range s.Environment {
		if isNATSCredential(name) {
			t.Errorf("environment %s: compose writes down no NATS credential, the TTS uses the development seeds", name)
		}
	}
	if cfg.Callout != mesh.DevKeys {
		t.Error("the TTS's callout keys are not the development ones the nats image's keys.conf trusts")
	}
	for i := 1; i <= 3; i++ {
		if !strings.Contains(cfg.NATSURL, fmt.Sprintf("nats://nats-%d:4222", i)) {
			t.Errorf("NATS URL %q lacks node nats-%d", cfg.NATSURL, i)
		}
	}
	// The TTS grants a workload's token only by that workload's client id:
	// it must be the id the service itself uses.
	for _, svc := range services {
		own := f.Services[svc.name].Environment[svc.prefix()+"CLIENT_ID"]
		if got := cfg.PeerClientID(svc.name); own == "" || got != own {
			t.Errorf("the TTS knows %s as %q, the service calls itself %q", svc.name, got, own)
		}
	}
	if !slices.Equal(s.Ports, []string{"127.0.0.1:8406:8406"}) || cfg.HTTPAddr != ":8406" {
		t.Errorf("ports %v, HTTP address %q: want 8406 on the host's loopback and in the container", s.Ports, cfg.HTTPAddr)
	}
	for _, dep := range []string{"devtenant", "nats-1", "nats-2", "nats-3"} {
		if s.DependsOn[dep]["condition"] != "service_healthy" {
			t.Errorf("does not wait for %s to be healthy", dep)
		}
	}
	// The dev key file is created on first start: it must live on a named
	// volume (kept across restarts, so tokens in queues stay verifiable) in
	// a directory the image gives to the runtime user.
	keysFile := s.Environment["TTS_KEYS_FILE"]
	var onVolume bool
	for _, v := range s.Volumes {
		vol, dir, _ := strings.Cut(v, ":")
		if _, named := f.Volumes[vol]; named && strings.HasPrefix(keysFile, strings.TrimSuffix(dir, "/")+"/") {
			onVolume = dir == "/data"
		}
	}
	if !onVolume {
		t.Errorf("TTS_KEYS_FILE %q is not on a named volume mounted at /data (volumes %v)", keysFile, s.Volumes)
	}
	df := filepath.Join(root, s.Build.Dockerfile)
	checkDockerfile(t, df, s.Build.Args, 8406, "/app", "healthcheck")
	b, err := os.ReadFile(df)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nCOPY --chown=65532:65532 bin/empty/ /data/\n") {
		t.Errorf("%s does not give /data to uid 65532: a fresh volume would not be writable", df)
	}
}
