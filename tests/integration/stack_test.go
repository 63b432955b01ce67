package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
	"golang.org/x/sync/errgroup"

	"github.com/authmesh/authmesh/tests/apiclient"
)

// Contract values the containers are configured with (docs/contract.md, docs/conventions.md).
const (
	issuer     = "http://localhost:8400/"
	mgmtAud    = "http://localhost:8400/api/v2/"
	natsURLs   = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"
	natsHealth = "8222/tcp"
	natsClient = "4222/tcp"
	natsWS     = "8405/tcp" // NATS over WebSocket (people's live updates)
	ttsJWKS    = "http://tts:8406/.well-known/jwks.json"
	// Where every service exports its spans: the jaeger container, as in
	// compose with the profile tracing (make up TRACING=1).
	otlpEndpoint = "http://jaeger:4318"
	jaegerHealth = "13133/tcp"
)

// image is one image the suite builds from the repository's own Dockerfile.
type image struct {
	name       string
	dockerfile string
	binaries   []string           // what the Dockerfile COPYs from bin/ besides the CA bundle
	args       map[string]*string // build args (the services' shared Dockerfile)
}

// service is one of the three services' images, built from their shared
// Dockerfile with its name and port as build args (as compose does).
func service(name, port string) image {
	return image{name, "services/Dockerfile", []string{name}, map[string]*string{"SERVICE": &name, "PORT": &port}}
}

var images = []image{
	{"nats", "deploy/nats/Dockerfile", []string{"nats-server", "httpprobe"}, nil},
	{"devtenant", "tools/devtenant/Dockerfile", []string{"devtenant"}, nil},
	service("users", "8401"),
	service("orders", "8402"),
	service("billing", "8403"),
	{"tts", "services/tts/Dockerfile", []string{"tts"}, nil},
	// bin/jaeger comes from tools/jaeger/build.sh (cached in the checkout), not go build.
	{"jaeger", "deploy/jaeger/Dockerfile", []string{"jaeger", "httpprobe"}, nil},
}

// Go packages built into static binaries, as deploy/compose-smoke.sh builds them.
var packages = []string{
	"github.com/nats-io/nats-server/v2", "./tools/devstack/cmd/httpprobe", "./tools/devtenant/cmd/devtenant",
	"./services/users/cmd/users", "./services/orders/cmd/orders", "./services/billing/cmd/billing", "./services/tts/cmd/tts",
}

// ports are the HTTP ports inside the containers (published on random host ports).
var ports = map[string]string{
	"devtenant": "8400/tcp", "users": "8401/tcp", "orders": "8402/tcp", "billing": "8403/tcp", "tts": "8406/tcp",
	"nats-1": natsHealth, "nats-2": natsHealth, "nats-3": natsHealth,
	"jaeger": "16686/tcp", // its query API
}

var natsNodes = []string{"nats-1", "nats-2", "nats-3"}
var services = []string{"users", "orders", "billing"}

// system is one running stack: containers by name, and their published URLs.
type system struct {
	runID string
	// routePassword is the NATS cluster's (deploy/nats/cluster.conf): this
	// run's own, random.
	routePassword string
	root          string // repository root
	work          string // temporary: static binaries
	// jaegerBin is Jaeger's binary, built (or found cached) by tools/jaeger/build.sh.
	jaegerBin string
	provider  *testcontainers.DockerProvider
	net       *testcontainers.DockerNetwork
	built     []string // image references to remove at the end

	mu   sync.RWMutex
	ctrs map[string]testcontainers.Container
	urls map[string]string // name -> http://localhost:<published port>
}

func newSystem() (*system, error) {
	root, err := findRoot()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "authmesh-it-")
	if err != nil {
		return nil, err
	}
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		os.RemoveAll(work)
		return nil, err
	}
	return &system{
		runID: hex.EncodeToString(b), routePassword: rand.Text(), root: root, work: work, provider: p,
		ctrs: map[string]testcontainers.Container{}, urls: map[string]string{},
	}, nil
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory: run from inside the repository")
		}
		dir = parent
	}
}

func (s *system) imageRef(name string) string { return "authmesh-it/" + name + ":" + s.runID }

// build compiles the static binaries into a temporary directory (never the
// repository's bin/, which compose uses) and builds each image once, tagged
// with this run's id so nothing of make up or another run is replaced.
func (s *system) build(ctx context.Context) error {
	bin := filepath.Join(s.work, "bin")
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", bin + "/"}, packages...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return fmt.Errorf("CA bundle for the images (install ca-certificates): %w", err)
	}
	if err := os.WriteFile(filepath.Join(bin, "ca-certificates.crt"), ca, 0o644); err != nil {
		return err
	}
	if err := os.Symlink(s.jaegerBin, filepath.Join(bin, "jaeger")); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for _, img := range images {
		g.Go(func() error { return s.buildImage(gctx, img) })
	}
	return g.Wait()
}

func (s *system) buildImage(ctx context.Context, img image) error {
	archive, err := s.buildContext(img)
	if err != nil {
		return fmt.Errorf("image %s: context: %w", img.name, err)
	}
	var log bytes.Buffer
	ref, err := s.provider.BuildImage(ctx, &testcontainers.ContainerRequest{
		FromDockerfile: testcontainers.FromDockerfile{
			ContextArchive: bytes.NewReader(archive),
			Dockerfile:     img.dockerfile,
			BuildArgs:      img.args,
			Repo:           "authmesh-it/" + img.name,
			Tag:            s.runID,
			KeepImage:      true,
			BuildLogWriter: &log,
		},
	})
	if err != nil {
		return fmt.Errorf("image %s from %s: %w\n%s", img.name, img.dockerfile, err, log.Bytes())
	}
	s.mu.Lock()
	s.built = append(s.built, ref)
	s.mu.Unlock()
	return nil
}

// buildContext is the repository-root context the Dockerfiles expect, holding
// only what they COPY (the .dockerignore allow-list), with this run's binaries.
func (s *system) buildContext(img image) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name, src string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/empty/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return nil, err
	}
	for _, b := range append([]string{"ca-certificates.crt"}, img.binaries...) {
		if err := add("bin/"+b, filepath.Join(s.work, "bin", b)); err != nil {
			return nil, err
		}
	}
	if err := add(img.dockerfile, filepath.Join(s.root, img.dockerfile)); err != nil {
		return nil, err
	}
	confs, err := filepath.Glob(filepath.Join(s.root, "deploy/nats/*.conf"))
	if err != nil {
		return nil, err
	}
	for _, c := range append(confs, filepath.Join(s.root, "deploy/jaeger/config.yaml")) {
		rel, err := filepath.Rel(s.root, c)
		if err != nil {
			return nil, err
		}
		if err := add(filepath.ToSlash(rel), c); err != nil {
			return nil, err
		}
	}
	if err := add("deploy/tenant.yaml", filepath.Join(s.root, "deploy/tenant.yaml")); err != nil {
		return nil, err
	}
	err = filepath.WalkDir(filepath.Join(s.root, "deploy/dev"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		return add(filepath.ToSlash(rel), p)
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// up brings the stack up on a private network: the NATS cluster (healthy
// means it has a JetStream meta leader), devtenant, the Transaction Token
// Service, then the services (ready means NATS connected and the tenant's and
// the TTS's signing keys loaded).
func (s *system) up(ctx context.Context) error {
	nw, err := network.New(ctx)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	s.net = nw

	g, gctx := errgroup.WithContext(ctx)
	for _, n := range natsNodes {
		// All three at once: none is healthy before a quorum of routes exists.
		g.Go(func() error { return s.run(gctx, s.natsRequest(n)) })
	}
	g.Go(func() error { return s.run(gctx, s.devtenantRequest()) })
	g.Go(func() error { return s.run(gctx, s.jaegerRequest()) })
	if err := g.Wait(); err != nil {
		return err
	}
	// The services reach NATS only through the TTS's auth callout and are
	// ready only once it serves its keys; the TTS is ready only once users
	// has created the revocation bucket: start it, wait for its /healthz,
	// then for everyone's /readyz.
	if err := s.run(ctx, s.ttsRequest()); err != nil {
		return err
	}
	g, gctx = errgroup.WithContext(ctx)
	for _, svc := range services {
		g.Go(func() error { return s.run(gctx, s.serviceRequest(svc, svc, "/readyz")) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return s.waitReady(ctx, "tts")
}

// waitReady polls a container's /readyz until it answers 200.
func (s *system) waitReady(ctx context.Context, name string) error {
	var last string
	for {
		resp, err := httpClient.Get(s.url(name) + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %s (%w)", name, last, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *system) base(name, img string) testcontainers.GenericContainerRequest {
	return testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Name:           "authmesh-it-" + s.runID + "-" + name,
			Image:          s.imageRef(img),
			ExposedPorts:   []string{ports[img]},
			Networks:       []string{s.net.Name},
			NetworkAliases: map[string][]string{s.net.Name: {name}},
		},
		Started: true,
	}
}

func (s *system) natsRequest(name string) testcontainers.GenericContainerRequest {
	r := s.base(name, "nats")
	r.ExposedPorts = []string{natsHealth, natsClient, natsWS}
	// As compose runs them: routes to every node, with the cluster password.
	routes := make([]string, len(natsNodes))
	for i, n := range natsNodes {
		routes[i] = "nats://route:" + s.routePassword + "@" + n + ":6222"
	}
	r.Cmd = []string{"--config", "/etc/nats/cluster.conf", "--name", name, "--routes", strings.Join(routes, ",")}
	r.Env = map[string]string{"NATS_ROUTE_PASSWORD": s.routePassword}
	r.WaitingFor = wait.ForHTTP("/healthz").WithPort(natsHealth).
		WithStartupTimeout(90 * time.Second).WithPollInterval(250 * time.Millisecond)
	return r
}

func (s *system) devtenantRequest() testcontainers.GenericContainerRequest {
	r := s.base("devtenant", "devtenant")
	r.Env = map[string]string{"DEVTENANT_ADDR": ":8400", "DEVTENANT_ISSUER": issuer}
	r.WaitingFor = httpWait("/.well-known/jwks.json", ports["devtenant"])
	return r
}

// ttsRequest is the Transaction Token Service with compose's environment:
// the development callout keys (no seed is set, as in compose; the nats
// image's keys.conf trusts their public halves), the tenant as the services
// see it, and its dev key file in the image's /data (an anonymous volume, so
// a restart keeps the keys). It answers the auth callout, so no service
// connects to NATS before it runs. It counts as started on /healthz:
// /readyz needs the revocation bucket, which users creates (see up).
func (s *system) ttsRequest() testcontainers.GenericContainerRequest {
	r := s.base("tts", "tts")
	r.Env = map[string]string{
		"AUTH0_ISSUER":   issuer,
		"AUTH0_AUDIENCE": apiclient.Audience,
		"AUTH0_JWKS_URL": "http://devtenant:8400/.well-known/jwks.json",
		"TTS_HTTP_ADDR":  ":8406",
		"TTS_NATS_URL":   natsURLs,
		"TTS_KEYS_FILE":  "/data/keys.json",

		"OTEL_EXPORTER_OTLP_ENDPOINT": otlpEndpoint,
	}
	for _, svc := range services {
		r.Env[strings.ToUpper(svc)+"_CLIENT_ID"] = svc + "-service"
	}
	r.WaitingFor = httpWait("/healthz", ports["tts"])
	return r
}

// serviceRequest is a service container with compose's environment (no NATS
// credential: it connects with its client-credentials token, which the
// TTS's auth callout turns into its NATS user); name is
// its network alias (an extra instance gets its own), ready the path it must
// answer 200 on before it counts as started.
func (s *system) serviceRequest(svc, name, ready string) testcontainers.GenericContainerRequest {
	r := s.base(name, svc)
	p := strings.ToUpper(svc) + "_"
	r.Env = map[string]string{
		"AUTH0_ISSUER":      issuer,
		"AUTH0_AUDIENCE":    apiclient.Audience,
		"AUTH0_JWKS_URL":    "http://devtenant:8400/.well-known/jwks.json",
		"AUTH0_TOKEN_URL":   "http://devtenant:8400/oauth/token",
		p + "HTTP_ADDR":     ":" + strings.TrimSuffix(ports[svc], "/tcp"),
		p + "NATS_URL":      natsURLs,
		p + "NATS_REPLICAS": "3",
		p + "CLIENT_ID":     svc + "-service",
		p + "CLIENT_SECRET": svc + "-service-dev-secret",
		p + "CORS_ORIGINS":  "http://localhost:8404",

		"AUTHMESH_TTS_JWKS_URL":       ttsJWKS,
		"OTEL_EXPORTER_OTLP_ENDPOINT": otlpEndpoint,
	}
	if svc == "users" {
		r.Env["USERS_MGMT_URL"] = "http://devtenant:8400/api/v2/"
		r.Env["USERS_MGMT_AUDIENCE"] = mgmtAud
	}
	r.WaitingFor = httpWait(ready, ports[svc])
	return r
}

// jaegerRequest is Jaeger v2 from deploy/jaeger/Dockerfile (in-memory
// store, OTLP/HTTP on 4318 for the services, the query API on 16686 for the
// tests), healthy once its health endpoint answers.
func (s *system) jaegerRequest() testcontainers.GenericContainerRequest {
	r := s.base("jaeger", "jaeger")
	r.ExposedPorts = []string{ports["jaeger"], jaegerHealth}
	r.WaitingFor = wait.ForHTTP("/status").WithPort(jaegerHealth).
		WithStartupTimeout(60 * time.Second).WithPollInterval(250 * time.Millisecond)
	return r
}

func httpWait(path, port string) wait.Strategy {
	return wait.ForHTTP(path).WithPort(port).WithStartupTimeout(120 * time.Second).WithPollInterval(250 * time.Millisecond)
}

// run creates and starts a container and records it under its alias.
func (s *system) run(ctx context.Context, req testcontainers.GenericContainerRequest) error {
	name := req.NetworkAliases[s.net.Name][0]
	ctr, err := testcontainers.GenericContainer(ctx, req)
	if ctr != nil {
		s.mu.Lock()
		s.ctrs[name] = ctr
		s.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("container %s: %w", name, err)
	}
	return s.refreshURL(ctx, name)
}

// refreshURL reads the published port again: Docker picks a new host port
// each time a container starts.
func (s *system) refreshURL(ctx context.Context, name string) error {
	ctr := s.container(name)
	img := name
	if strings.HasPrefix(name, "nats-") {
		img = "nats-1"
	} else if i := strings.IndexByte(name, '-'); i > 0 {
		img = name[:i] // billing-2 is a billing
	}
	p, err := ctr.MappedPort(ctx, ports[img])
	if err != nil {
		return fmt.Errorf("%s: published port: %w", name, err)
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.urls[name] = "http://" + host + ":" + p.Port()
	s.mu.Unlock()
	return nil
}

// natsClientURL is the published client URL of a NATS node, for the tests
// that connect with a workload's own token.
func (s *system) natsClientURL(ctx context.Context, node string) (string, error) {
	return s.natsURL(ctx, node, natsClient, "nats")
}

// natsWSURL is the published WebSocket URL of a NATS node, where people's
// live connections go (ws://localhost:8405 in compose).
func (s *system) natsWSURL(ctx context.Context, node string) (string, error) {
	return s.natsURL(ctx, node, natsWS, "ws")
}

func (s *system) natsURL(ctx context.Context, node, port, scheme string) (string, error) {
	ctr := s.container(node)
	p, err := ctr.MappedPort(ctx, port)
	if err != nil {
		return "", fmt.Errorf("%s: published port %s: %w", node, port, err)
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		return "", err
	}
	return scheme + "://" + host + ":" + p.Port(), nil
}

func (s *system) container(name string) testcontainers.Container {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ctrs[name]
}

// url is the published base URL of a container, e.g. http://localhost:49153.
func (s *system) url(name string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, ok := s.urls[name]
	if !ok {
		panic("integration: no container " + name)
	}
	return u
}

// stop stops a container gracefully (SIGTERM, then SIGKILL after 10 s).
func (s *system) stop(ctx context.Context, name string) error {
	d := 10 * time.Second
	if err := s.container(name).Stop(ctx, &d); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	return nil
}

// kill sends SIGKILL: no graceful shutdown, no drained acks.
func (s *system) kill(ctx context.Context, name string) error {
	id := s.container(name).GetContainerID()
	if _, err := s.provider.Client().ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	// Wait until Docker reports it gone so a following start is a real restart.
	for {
		st, err := s.container(name).State(ctx)
		if err != nil {
			return err
		}
		if !st.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// start starts a stopped container and waits for its wait strategy again.
func (s *system) start(ctx context.Context, name string) error {
	if err := s.container(name).Start(ctx); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return s.refreshURL(ctx, name)
}

// startNoWait starts a stopped container without waiting for readiness, for
// catching a service in the middle of its start-up work.
func (s *system) startNoWait(ctx context.Context, name string) error {
	id := s.container(name).GetContainerID()
	if _, err := s.provider.Client().ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return s.refreshURL(ctx, name)
}

// remove terminates one container (an extra instance) and forgets it.
func (s *system) remove(ctx context.Context, name string) error {
	ctr := s.container(name)
	s.mu.Lock()
	delete(s.ctrs, name)
	delete(s.urls, name)
	s.mu.Unlock()
	if ctr == nil {
		return nil
	}
	return ctr.Terminate(ctx)
}

// dumpLogs prints the start and the end of every container's log, and keeps
// each whole log in a directory that outlives the run.
func (s *system) dumpLogs(w io.Writer) {
	s.mu.RLock()
	names := make([]string, 0, len(s.ctrs))
	for n := range s.ctrs {
		names = append(names, n)
	}
	s.mu.RUnlock()
	dir := filepath.Join(os.TempDir(), "authmesh-it-logs-"+s.runID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		dir = ""
	}
	for _, n := range names {
		lines := s.logLines(n)
		if dir != "" {
			_ = os.WriteFile(filepath.Join(dir, n+".log"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
		}
		fmt.Fprintf(w, "\n===== logs of %s (%d lines; first 40 and last 120) =====\n", n, len(lines))
		if len(lines) > 160 {
			lines = append(append(lines[:40:40], "[...]"), lines[len(lines)-120:]...)
		}
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	}
	if dir != "" {
		fmt.Fprintf(w, "\nwhole container logs: %s\n", dir)
	}
}

// logTail is the last n lines of a container's log.
func (s *system) logTail(name string, n int) string {
	lines := s.logLines(name)
	return strings.Join(lines[max(0, len(lines)-n):], "\n") + "\n"
}

func (s *system) logLines(name string) []string {
	ctr := s.container(name)
	if ctr == nil {
		return []string{"(no such container)"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return []string{fmt.Sprintf("(logs unavailable: %v)", err)}
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// close removes every container, the network, the images and the binaries
// (Ryuk is off, so nothing else would).
func (s *system) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s.mu.Lock()
	ctrs := s.ctrs
	s.ctrs = map[string]testcontainers.Container{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for n, c := range ctrs {
		wg.Go(func() {
			if err := c.Terminate(ctx, testcontainers.StopTimeout(time.Second)); err != nil {
				logf("cleanup: container %s: %v", n, err)
			}
		})
	}
	wg.Wait()
	if s.net != nil {
		if err := s.net.Remove(ctx); err != nil {
			logf("cleanup: network %s: %v", s.net.Name, err)
		}
	}
	for _, ref := range s.built {
		if _, err := s.provider.Client().ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
			logf("cleanup: image %s: %v", ref, err)
		}
	}
	s.provider.Close()
	os.RemoveAll(s.work)
}
