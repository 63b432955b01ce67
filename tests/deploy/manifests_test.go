package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/platform"
	"github.com/authmesh/authmesh/pkg/platform/mesh"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const root = "../.."

// service is a service of the contract (docs/contract.md §1).
type service struct {
	name string
	port int32
}

var services = []service{{"users", 8401}, {"orders", 8402}, {"billing", 8403}}

func (s service) prefix() string { return strings.ToUpper(s.name) + "_" }

// knownEnv returns every variable pkg/platform reads for the service, found by
// running its real LoadConfig with a recording getenv, so a renamed variable
// there fails these tests instead of silently going unread.
func knownEnv(t *testing.T, svc string) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	if _, err := platform.LoadConfig(svc, func(k string) string { seen[k] = true; return "" }); err != nil {
		t.Fatalf("platform.LoadConfig(%s) with defaults: %v", svc, err)
	}
	if len(seen) < 10 {
		t.Fatalf("platform.LoadConfig read only %d variables: the recording getenv is not used", len(seen))
	}
	return seen
}

// objects are the decoded resources of one kustomization.
type objects struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
}

// decodeStrict decodes one manifest into its Kubernetes API type, rejecting
// unknown or misspelt fields.
func decodeStrict(doc []byte, into *objects) error {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return err
	}
	switch meta.APIVersion + " " + meta.Kind {
	case "apps/v1 Deployment":
		return decodeInto(doc, into.deployments)
	case "apps/v1 StatefulSet":
		return decodeInto(doc, into.statefulSets)
	case "v1 Service":
		return decodeInto(doc, into.services)
	case "v1 ConfigMap":
		return decodeInto(doc, into.configMaps)
	default:
		return fmt.Errorf("unexpected resource %s %s", meta.APIVersion, meta.Kind)
	}
}

// decodeInto decodes doc strictly as a T and files it under its name.
func decodeInto[T any, P interface {
	*T
	GetName() string
}](doc []byte, byName map[string]*T) error {
	o := P(new(T))
	if err := yaml.UnmarshalStrict(doc, o); err != nil {
		return err
	}
	byName[o.GetName()] = o
	return nil
}

func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// build runs kustomize (its Go API, as `kubectl apply -k` would) on a base and
// decodes the output strictly.
func build(t *testing.T, dir string) objects {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "deploy", "k8s", dir))
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/%s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	o := objects{map[string]*appsv1.Deployment{}, map[string]*appsv1.StatefulSet{}, map[string]*corev1.Service{}, map[string]*corev1.ConfigMap{}}
	for _, doc := range splitDocs(out) {
		if err := decodeStrict(doc, &o); err != nil {
			t.Fatalf("deploy/k8s/%s: %v\n%s", dir, err, doc)
		}
	}
	return o
}

// TestManifestFilesDecodeStrictly decodes every manifest file as written
// (before kustomize), so a misspelt field fails even where kustomize would pass it through.
func TestManifestFilesDecodeStrictly(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "k8s", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("found only %d manifest files", len(files))
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		t.Run(strings.TrimPrefix(f, root+"/"), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			o := objects{map[string]*appsv1.Deployment{}, map[string]*appsv1.StatefulSet{}, map[string]*corev1.Service{}, map[string]*corev1.ConfigMap{}}
			for _, doc := range splitDocs(b) {
				if err := decodeStrict(doc, &o); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// checkHardened asserts what every pod of the system must have: non-root,
// read-only root filesystem, no privilege escalation, no capabilities,
// requests and limits, liveness and readiness probes.
func checkHardened(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if pod.SecurityContext != nil && (pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0) {
		t.Error("pod runs without a numeric non-root runAsUser")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("service account token is mounted; none of the pods talks to the API server")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("container has no securityContext")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("allowPrivilegeEscalation is not false")
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		t.Error("capabilities do not drop ALL")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Error("liveness or readiness probe missing")
	}
}

// probe returns the HTTP path and resolved container port of a probe.
func probe(t *testing.T, c corev1.Container, p *corev1.Probe) (string, int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("%s: probe is not an HTTP GET", c.Name)
	}
	port := p.HTTPGet.Port
	if port.StrVal == "" {
		return p.HTTPGet.Path, port.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal {
			return p.HTTPGet.Path, cp.ContainerPort
		}
	}
	t.Fatalf("%s: probe names port %q, which the container does not declare", c.Name, port.StrVal)
	return "", 0
}

func TestServiceBases(t *testing.T) {
	t.Parallel()
	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			t.Parallel()
			o := build(t, svc.name)
			d := o.deployments[svc.name]
			if d == nil || len(o.deployments) != 1 {
				t.Fatalf("want exactly the Deployment %q, got %v", svc.name, keys(o.deployments))
			}
			pod := d.Spec.Template.Spec
			checkHardened(t, pod)
			c := pod.Containers[0]
			if want := "authmesh/" + svc.name + ":dev"; c.Image != want {
				t.Errorf("image = %q, want %q", c.Image, want)
			}
			if len(c.Ports) != 1 || c.Ports[0].ContainerPort != svc.port {
				t.Errorf("container ports = %+v, want only %d", c.Ports, svc.port)
			}
			if path, port := probe(t, c, c.LivenessProbe); path != "/healthz" || port != svc.port {
				t.Errorf("liveness probe = %s on %d, want /healthz on %d", path, port, svc.port)
			}
			if path, port := probe(t, c, c.ReadinessProbe); path != "/readyz" || port != svc.port {
				t.Errorf("readiness probe = %s on %d, want /readyz on %d", path, port, svc.port)
			}

			// The environment the pod gets: ConfigMap values plus Secret references.
			known := knownEnv(t, svc.name)
			env := map[string]string{}
			for _, from := range c.EnvFrom {
				if from.ConfigMapRef == nil {
					t.Fatalf("envFrom %+v: only ConfigMaps expected", from)
				}
				cm := o.configMaps[from.ConfigMapRef.Name]
				if cm == nil {
					t.Fatalf("envFrom names ConfigMap %q, which the base does not define", from.ConfigMapRef.Name)
				}
				for k, v := range cm.Data {
					env[k] = v
				}
			}
			secretRefs := map[string]string{}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
					secretRefs[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
					env[e.Name] = "from-secret"
				case e.ValueFrom == nil:
					env[e.Name] = e.Value
				default:
					t.Errorf("env %s: unexpected source", e.Name)
				}
			}
			for name := range env {
				if !known[name] {
					t.Errorf("env %s is not read by pkg/platform for %s (typo or stale name)", name, svc.name)
				}
			}
			// Its one secret is its Auth0 client secret; NATS accepts it by the
			// token that secret gets (the auth callout), so nothing else.
			p := svc.prefix()
			if want := map[string]string{p + "CLIENT_SECRET": svc.name + "-credentials/client-secret"}; !maps.Equal(secretRefs, want) {
				t.Errorf("Secret references %v, want only %v", secretRefs, want)
			}
			checkNoNATSCredential(t, svc.name, env)
			cfg, err := platform.LoadConfig(svc.name, func(k string) string { return env[k] })
			if err != nil {
				t.Fatalf("the pod's environment is rejected by pkg/platform: %v", err)
			}
			if cfg.HTTPAddr != fmt.Sprintf(":%d", svc.port) {
				t.Errorf("HTTP address = %q, want :%d (the container port)", cfg.HTTPAddr, svc.port)
			}
			if cfg.NATSReplicas != 3 || cfg.ClientID != svc.name+"-service" {
				t.Errorf("config = %s, want replicas 3, client %s-service", cfg, svc.name)
			}
			if cfg.Callout != (mesh.Keys{}) {
				t.Error("the service's configuration holds callout keys")
			}
			if cfg.NATSURL != "nats://nats:4222" {
				t.Errorf("NATS URL = %q, want the nats Service of deploy/k8s/nats", cfg.NATSURL)
			}
			if env["AUTHMESH_TTS_JWKS_URL"] != ttsJWKSInCluster || cfg.Txn.JWKSURL != ttsJWKSInCluster {
				t.Errorf("AUTHMESH_TTS_JWKS_URL = %q, want the tts Service of deploy/k8s/tts, %s", env["AUTHMESH_TTS_JWKS_URL"], ttsJWKSInCluster)
			}

			s := o.services[svc.name]
			if s == nil || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != svc.port || s.Spec.Ports[0].TargetPort.StrVal != "http" {
				t.Fatalf("Service %s = %+v, want port %d to the container's http port", svc.name, s, svc.port)
			}
			if !selects(s.Spec.Selector, d.Spec.Template.Labels) || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
				t.Error("Service or Deployment selector does not match the pod labels")
			}
		})
	}
}

// ttsJWKSInCluster is where the services fetch the TTS's keys in Kubernetes.
const ttsJWKSInCluster = "http://tts:8406/.well-known/jwks.json"

// TestTTSBase checks deploy/k8s/tts the way the services' bases are checked,
// plus what only it has: signing keys from a read-only Secret, the NATS auth
// callout's four seeds from its own Secret, the workloads' client ids as the
// services' bases name them, and more than one replica (it is stateless but
// for keys).
func TestTTSBase(t *testing.T) {
	t.Parallel()
	o := build(t, "tts")
	d := o.deployments["tts"]
	if d == nil || len(o.deployments) != 1 {
		t.Fatalf("want exactly the Deployment tts, got %v", keys(o.deployments))
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas = %v, want at least 2 (every request that needs a new transaction token waits on it)", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	checkHardened(t, pod)
	c := pod.Containers[0]
	if c.Image != "authmesh/tts:dev" {
		t.Errorf("image = %q, want authmesh/tts:dev", c.Image)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8406 {
		t.Errorf("container ports = %+v, want only 8406", c.Ports)
	}
	if path, port := probe(t, c, c.LivenessProbe); path != "/healthz" || port != 8406 {
		t.Errorf("liveness probe = %s on %d, want /healthz on 8406", path, port)
	}
	if path, port := probe(t, c, c.ReadinessProbe); path != "/readyz" || port != 8406 {
		t.Errorf("readiness probe = %s on %d, want /readyz on 8406", path, port)
	}

	known := knownEnv(t, "tts")
	known["TTS_KEYS_FILE"] = true // read by the service itself (services/tts/internal/service.KeysFile)
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil || o.configMaps[from.ConfigMapRef.Name] == nil {
			t.Fatalf("envFrom %+v: want a ConfigMap of the base", from)
		}
		for k, v := range o.configMaps[from.ConfigMapRef.Name].Data {
			env[k] = v
		}
	}
	// The callout's four seeds, each from the Secret tts-credentials under
	// its own variable's name (what `tts nats-keys init` writes). The test
	// gives each the development seed of the field it should fill, so a
	// crossed variable shows as keys that differ from mesh.DevKeys.
	seeds := map[string]string{
		"TTS_CALLOUT_ISSUER_SEED": mesh.DevKeys.Issuer, "TTS_CALLOUT_XKEY_SEED": mesh.DevKeys.XKey,
		"TTS_NATS_SEED": mesh.DevKeys.Service, "TTS_SYS_NATS_SEED": mesh.DevKeys.System,
	}
	secretRefs := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			secretRefs[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
			env[e.Name] = seeds[e.Name]
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		default:
			t.Errorf("env %s: unexpected source", e.Name)
		}
	}
	wantRefs := map[string]string{}
	for name := range seeds {
		wantRefs[name] = "tts-credentials/" + name
	}
	if !maps.Equal(secretRefs, wantRefs) {
		t.Errorf("Secret references %v, want exactly the four seeds from tts-credentials %v", secretRefs, wantRefs)
	}
	for name := range env {
		if _, seed := seeds[name]; !seed && isNATSCredential(name) {
			t.Errorf("env %s: the TTS's only NATS credentials are its four seeds", name)
		}
	}
	for _, cm := range o.configMaps {
		if strings.Contains(fmt.Sprint(cm.Data), "SEED") || strings.Contains(fmt.Sprint(cm.Data), "dev-secret") {
			t.Errorf("ConfigMap %s holds a seed or secret: seeds belong in the Secret", cm.Name)
		}
	}
	for name := range env {
		if !known[name] {
			t.Errorf("env %s is not read by the TTS (typo or stale name)", name)
		}
	}
	cfg, err := platform.LoadConfig("tts", func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the pod's environment is rejected by pkg/platform: %v", err)
	}
	if cfg.HTTPAddr != ":8406" || cfg.NATSURL != "nats://nats:4222" {
		t.Errorf("config = %s, want :8406 on the nats Service", cfg)
	}
	if cfg.Callout != mesh.DevKeys {
		t.Error("the seeds from tts-credentials do not land in the callout keys they name (crossed variables)")
	}
	// The TTS admits a workload's token by its client id: the one that
	// workload's own base configures.
	for _, svc := range services {
		own := build(t, svc.name).configMaps[svc.name+"-config"]
		if own == nil {
			t.Fatalf("deploy/k8s/%s has no ConfigMap %s-config", svc.name, svc.name)
		}
		if want, got := own.Data[svc.prefix()+"CLIENT_ID"], cfg.PeerClientID(svc.name); want == "" || got != want {
			t.Errorf("the TTS knows %s as %q, its base configures %q", svc.name, got, want)
		}
	}

	// The keys: TTS_KEYS_FILE inside a read-only mount of the Secret tts-keys.
	keysFile := env["TTS_KEYS_FILE"]
	var fromSecret bool
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(keysFile, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == "tts-keys" {
				fromSecret = m.ReadOnly
			}
		}
	}
	if !fromSecret {
		t.Errorf("TTS_KEYS_FILE %q is not in a read-only mount of the Secret tts-keys", keysFile)
	}

	s := o.services["tts"]
	if s == nil || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 8406 || s.Spec.Ports[0].TargetPort.StrVal != "http" {
		t.Fatalf("Service tts = %+v, want port 8406 to the container's http port (the services' AUTHMESH_TTS_JWKS_URL)", s)
	}
	if !selects(s.Spec.Selector, d.Spec.Template.Labels) || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Error("Service or Deployment selector does not match the pod labels")
	}
}

func TestNATSBase(t *testing.T) {
	t.Parallel()
	o := build(t, "nats")
	ss := o.statefulSets["nats"]
	if ss == nil || ss.Spec.Replicas == nil || *ss.Spec.Replicas != 3 {
		t.Fatalf("want the StatefulSet nats with 3 replicas, got %+v", ss)
	}
	pod := ss.Spec.Template.Spec
	checkHardened(t, pod)
	c := pod.Containers[0]
	if c.Image != "authmesh/nats:dev" {
		t.Errorf("image = %q", c.Image)
	}
	// Monitoring answers on the pod's loopback only (it asks for no
	// credential and lists every account's connections, subscriptions and
	// streams): the probes run /httpprobe in the pod, and no port or Service
	// offers 8222.
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.Exec == nil || len(p.Exec.Command) != 2 || p.Exec.Command[0] != "/httpprobe" ||
			!strings.HasPrefix(p.Exec.Command[1], "http://127.0.0.1:8222/healthz") {
			t.Errorf("%s probe %+v: want /httpprobe http://127.0.0.1:8222/healthz…", name, p)
		}
	}
	for _, p := range c.Ports {
		if p.ContainerPort == 8222 {
			t.Errorf("container port %s 8222: monitoring is the pod's own", p.Name)
		}
	}
	for name, svc := range o.services {
		for _, p := range svc.Spec.Ports {
			if p.Port == 8222 || p.TargetPort.IntVal == 8222 || p.TargetPort.StrVal == "monitor" {
				t.Errorf("Service %s offers the monitoring port", name)
			}
		}
	}
	// The generated ConfigMap (hashed name) must be the one mounted, and hold
	// the shared accounts file from deploy/nats, with the callout's public
	// keys from the environment (keys-env.conf mounted as keys.conf).
	var cmName string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	cm := o.configMaps[cmName]
	if cm == nil {
		t.Fatalf("the mounted ConfigMap %q is not in the build (have %v)", cmName, keys(o.configMaps))
	}
	for key, file := range map[string]string{"accounts.conf": "accounts.conf", "keys.conf": "keys-env.conf"} {
		want, err := os.ReadFile(filepath.Join(root, "deploy", "nats", file))
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data[key] != string(want) {
			t.Errorf("the ConfigMap's %s differs from deploy/nats/%s", key, file)
		}
	}
	if _, ok := cm.Data["passwords.conf"]; ok {
		t.Error("the ConfigMap still has a passwords.conf")
	}
	// keys.conf defines no variable in Kubernetes: every line is a comment,
	// so nothing there (least of all a development key) overrides the
	// environment.
	for _, line := range strings.Split(cm.Data["keys.conf"], "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			t.Errorf("the Kubernetes keys.conf defines %q: it must leave the keys to the environment", l)
		}
	}
	devPub, err := mesh.DevKeys.Public()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range devPub.Vars() {
		if strings.Contains(fmt.Sprint(cm.Data), v[1]) {
			t.Errorf("the Kubernetes NATS configuration holds the development %s", v[0])
		}
	}
	checkCalloutConfig(t, cm.Data["accounts.conf"])
	conf := cm.Data["cluster-k8s.conf"]
	if !strings.Contains(conf, "include accounts.conf") {
		t.Error("cluster-k8s.conf does not include the shared accounts")
	}
	if !slices.Contains(c.Args, "/etc/nats/cluster-k8s.conf") {
		t.Errorf("args %v do not load cluster-k8s.conf", c.Args)
	}
	// Routes present the cluster password, from the Secret nats-route
	// (cluster-k8s.conf refuses any other route), to every pod.
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://route:$(NATS_ROUTE_PASSWORD)@nats-%d.%s:6222", i, ss.Spec.ServiceName))
	}
	if k := slices.Index(c.Args, "--routes"); k < 0 || k+1 >= len(c.Args) || c.Args[k+1] != strings.Join(routes, ",") {
		t.Errorf("args %v: want --routes %s", c.Args, strings.Join(routes, ","))
	}
	if !regexp.MustCompile(`(?s)cluster\s*\{[^}]*authorization\s*\{\s*user:\s*route\s+password:\s*\$NATS_ROUTE_PASSWORD\b`).MatchString(conf) {
		t.Error("cluster-k8s.conf's cluster block does not require the route password")
	}
	if !regexp.MustCompile(`(?m)^http:\s*"127\.0\.0\.1:8222"`).MatchString(conf) {
		t.Error("cluster-k8s.conf's monitoring is not on 127.0.0.1:8222")
	}
	if !regexp.MustCompile(`(?s)websocket\s*\{[^}]*listen:\s*"0\.0\.0\.0:8405"`).MatchString(conf) {
		t.Error("cluster-k8s.conf has no websocket listener on 0.0.0.0:8405")
	}

	// The environment: the callout's four public keys, each from the
	// ConfigMap nats-callout-keys under its own name, and nothing secret.
	// That ConfigMap is created out of band (tts nats-keys init): in the
	// base it would carry keys somebody else also has.
	refs := map[string]string{}
	var routePassword bool
	for _, e := range c.Env {
		routePassword = routePassword || e.Name == "NATS_ROUTE_PASSWORD"
		switch {
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			refs[e.Name] = e.ValueFrom.ConfigMapKeyRef.Name + "/" + e.ValueFrom.ConfigMapKeyRef.Key
			if e.ValueFrom.ConfigMapKeyRef.Optional != nil && *e.ValueFrom.ConfigMapKeyRef.Optional {
				t.Errorf("env %s is optional: a server without the callout's keys must not start", e.Name)
			}
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			// The route password is the servers' one secret; no
			// workload's credential.
			if ref := e.ValueFrom.SecretKeyRef; e.Name != "NATS_ROUTE_PASSWORD" || ref.Name != "nats-route" || ref.Key != "password" || (ref.Optional != nil && *ref.Optional) {
				t.Errorf("env %s comes from the Secret %s: the servers hold no secret but the route password (nats-route/password, required)", e.Name, ref.Name)
			}
		}
		if isNATSCredential(e.Name) {
			t.Errorf("env %s: the servers know no workload's credential", e.Name)
		}
	}
	if !routePassword {
		t.Error("no NATS_ROUTE_PASSWORD: the routes' $(NATS_ROUTE_PASSWORD) would not expand and the nodes would not start")
	}
	want := map[string]string{}
	for _, v := range devPub.Vars() {
		want[v[0]] = "nats-callout-keys/" + v[0]
		if !strings.Contains(cm.Data["accounts.conf"], "$"+v[0]) {
			t.Errorf("accounts.conf does not use $%s", v[0])
		}
	}
	if !maps.Equal(refs, want) {
		t.Errorf("env from ConfigMaps %v, want the callout's public keys %v", refs, want)
	}
	if _, ok := o.configMaps["nats-callout-keys"]; ok {
		t.Error("the base defines nats-callout-keys: its keys would be somebody else's too (create it with tts nats-keys init)")
	}
	var ws bool
	for _, p := range c.Ports {
		ws = ws || (p.Name == "websocket" && p.ContainerPort == 8405)
	}
	if !ws {
		t.Errorf("container ports %+v: want websocket on 8405", c.Ports)
	}
	head := o.services[ss.Spec.ServiceName]
	if head == nil || head.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the StatefulSet's serviceName %q is not a headless Service", ss.Spec.ServiceName)
	}
	client := o.services["nats"]
	if client == nil || client.Spec.Ports[0].Port != 4222 {
		t.Fatalf("no nats Service on 4222 for the services' NATS_URL")
	}
	var wsPort bool
	for _, p := range client.Spec.Ports {
		wsPort = wsPort || (p.Port == 8405 && p.TargetPort.StrVal == "websocket")
	}
	if !wsPort {
		t.Errorf("the nats Service %+v does not expose the WebSocket port 8405", client.Spec.Ports)
	}
}

func TestDevtenantBase(t *testing.T) {
	t.Parallel()
	o := build(t, "devtenant")
	d := o.deployments["devtenant"]
	if d == nil {
		t.Fatal("no devtenant Deployment")
	}
	checkHardened(t, d.Spec.Template.Spec)
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "authmesh/devtenant:dev" || len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8400 {
		t.Errorf("image %q ports %+v, want authmesh/devtenant:dev on 8400", c.Image, c.Ports)
	}
	known := map[string]bool{"DEVTENANT_ADDR": true, "DEVTENANT_ISSUER": true, "DEVTENANT_TENANT_FILE": true, "DEVTENANT_DEV_DIR": true, "DEVTENANT_DATA_DIR": true}
	for _, e := range c.Env {
		if !known[e.Name] {
			t.Errorf("env %s is not a devtenant variable of docs/conventions.md", e.Name)
		}
		if e.Name == "DEVTENANT_ISSUER" && e.Value != "http://localhost:8400/" {
			t.Errorf("issuer %q, want the contract's http://localhost:8400/", e.Value)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
