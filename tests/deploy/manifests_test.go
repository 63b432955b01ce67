package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/authmesh/authmesh/pkg/platform"
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
			p := svc.prefix()
			for _, name := range []string{p + "CLIENT_SECRET", p + "NATS_PASSWORD"} {
				want := map[string]string{p + "CLIENT_SECRET": "client-secret", p + "NATS_PASSWORD": "nats-password"}[name]
				if got := secretRefs[name]; got != svc.name+"-credentials/"+want {
					t.Errorf("%s comes from %q, want the Secret %s-credentials key %s", name, got, svc.name, want)
				}
			}
			cfg, err := platform.LoadConfig(svc.name, func(k string) string { return env[k] })
			if err != nil {
				t.Fatalf("the pod's environment is rejected by pkg/platform: %v", err)
			}
			if cfg.HTTPAddr != fmt.Sprintf(":%d", svc.port) {
				t.Errorf("HTTP address = %q, want :%d (the container port)", cfg.HTTPAddr, svc.port)
			}
			if cfg.NATSReplicas != 3 || cfg.NATSUser != svc.name || cfg.ClientID != svc.name+"-service" {
				t.Errorf("config = %s, want replicas 3, NATS user %s, client %s-service", cfg, svc.name, svc.name)
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
// plus what only it has: signing keys from a read-only Secret, its NATS
// password from its own Secret, the workloads' client ids as the services'
// bases name them, and more than one replica (it is stateless but for keys).
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
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			if e.Name != "TTS_NATS_PASSWORD" || e.ValueFrom.SecretKeyRef.Name != "tts-credentials" || e.ValueFrom.SecretKeyRef.Key != "nats-password" {
				t.Errorf("env %s from Secret %s key %s: want only TTS_NATS_PASSWORD from tts-credentials/nats-password",
					e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			env[e.Name] = "from-secret"
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		default:
			t.Errorf("env %s: unexpected source", e.Name)
		}
	}
	if env["TTS_NATS_PASSWORD"] != "from-secret" {
		t.Error("TTS_NATS_PASSWORD is not read from the Secret tts-credentials")
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
	if cfg.HTTPAddr != ":8406" || cfg.NATSUser != "tts" || cfg.NATSURL != "nats://nats:4222" {
		t.Errorf("config = %s, want :8406, NATS user tts on the nats Service", cfg)
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
	if path, port := probe(t, c, c.ReadinessProbe); !strings.HasPrefix(path, "/healthz") || port != 8222 {
		t.Errorf("readiness = %s on %d, want /healthz on 8222", path, port)
	}
	// The generated ConfigMap (hashed name) must be the one mounted, and hold
	// the shared accounts file from deploy/nats, with passwords from the
	// environment (passwords-env.conf mounted as passwords.conf).
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
	for key, file := range map[string]string{"accounts.conf": "accounts.conf", "passwords.conf": "passwords-env.conf"} {
		want, err := os.ReadFile(filepath.Join(root, "deploy", "nats", file))
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data[key] != string(want) {
			t.Errorf("the ConfigMap's %s differs from deploy/nats/%s", key, file)
		}
	}
	if strings.Contains(cm.Data["passwords.conf"], "dev-secret") {
		t.Error("the Kubernetes passwords.conf holds development passwords")
	}
	conf := cm.Data["cluster-k8s.conf"]
	if !strings.Contains(conf, "include accounts.conf") {
		t.Error("cluster-k8s.conf does not include the shared accounts")
	}
	if !slices.Contains(c.Args, "/etc/nats/cluster-k8s.conf") {
		t.Errorf("args %v do not load cluster-k8s.conf", c.Args)
	}
	for i := range 3 {
		if route := fmt.Sprintf("nats://nats-%d.%s:6222", i, ss.Spec.ServiceName); !strings.Contains(conf, route) {
			t.Errorf("cluster-k8s.conf lacks the route %s", route)
		}
	}
	for _, name := range []string{"users", "orders", "billing", "tts"} {
		prefix := strings.ToUpper(name) + "_"
		var ref *corev1.SecretKeySelector
		for _, e := range c.Env {
			if e.Name == prefix+"NATS_PASSWORD" && e.ValueFrom != nil {
				ref = e.ValueFrom.SecretKeyRef
			}
		}
		if ref == nil || ref.Name != name+"-credentials" || ref.Key != "nats-password" {
			t.Errorf("%sNATS_PASSWORD is not read from the Secret %s-credentials (key nats-password): %+v", prefix, name, ref)
		}
	}
	head := o.services[ss.Spec.ServiceName]
	if head == nil || head.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the StatefulSet's serviceName %q is not a headless Service", ss.Spec.ServiceName)
	}
	client := o.services["nats"]
	if client == nil || client.Spec.Ports[0].Port != 4222 {
		t.Errorf("no nats Service on 4222 for the services' NATS_URL")
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
