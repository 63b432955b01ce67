package devstack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// BuildServices compiles the services' binaries (Services) into bin in one
// go invocation, with goCmd, in the workspace of root's go.work, so the
// shared modules come from the checkout even where the caller's environment
// says GOWORK=off. `make run` and tests/flows build the services with it.
func BuildServices(ctx context.Context, goCmd, root, bin string) error {
	args := []string{"build", "-o", bin + string(filepath.Separator)}
	for _, s := range Services {
		args = append(args, "./services/"+s.Name+"/cmd/"+s.Name)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("devstack: building the services failed: %v\n%s", err, out)
	}
	return nil
}

// childEnv is the service's environment: the caller's, then the stack's
// settings (later entries win in os/exec), so the contract ports on host
// (the stack's bind host) and the service's own client always apply. No
// NATS credential: users, orders and billing connect with their
// client-credentials token, the TTS with its development nkeys (its
// defaults without AUTH0_DOMAIN). otlp, unless empty, is where it exports
// its spans.
func childEnv(tenantFile, dataDir, host string, svc Service, otlp string) []string {
	p := strings.ToUpper(svc.Name) + "_"
	env := os.Environ()
	if otlp != "" {
		env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+otlp)
	}
	return append(env,
		"AUTHMESH_TTS_JWKS_URL=http://localhost:8406/.well-known/jwks.json",
		"TTS_KEYS_FILE="+filepath.Join(dataDir, "tts", "keys.json"),
		"AUTH0_ISSUER="+Issuer,
		"AUTH0_AUDIENCE="+Audience,
		"AUTH0_TENANT_FILE="+tenantFile,
		p+"HTTP_ADDR="+net.JoinHostPort(host, strconv.Itoa(svc.Port)),
		p+"NATS_URL="+NATSURL,
		p+"NATS_REPLICAS=1",
		p+"CLIENT_ID="+svc.Name+"-service",
		p+"CLIENT_SECRET="+svc.Name+"-service-dev-secret",
	)
}

// childCommand runs a service; cancelling ctx sends SIGTERM, and the process
// is killed if it has not exited StopTimeout later.
func childCommand(ctx context.Context, cfg Config, bin string, svc Service, otlp string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(bin, svc.Name))
	cmd.Dir = cfg.Root
	cmd.Env = childEnv(cfg.TenantFile, cfg.DataDir, cfg.BindHost, svc, otlp)
	out := prefixWriter(cfg.Out, svc.Name)
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group: a terminal's Ctrl-C reaches only devstack, which
	// then stops the children in order and within the deadline.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = cfg.StopTimeout
	return cmd
}

// prefixWriter writes each line to w as "name | line". Lines from concurrent
// writers never interleave mid-line.
func prefixWriter(w io.Writer, name string) io.Writer {
	return &linePrefixer{w: w, prefix: []byte(fmt.Sprintf("%-9s | ", name))}
}

var outMu sync.Mutex // one line at a time across every prefixer

type linePrefixer struct {
	w      io.Writer
	prefix []byte
	mu     sync.Mutex
	buf    []byte
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		line := p.buf[:i+1]
		outMu.Lock()
		_, err := p.w.Write(append(append([]byte{}, p.prefix...), line...))
		outMu.Unlock()
		p.buf = p.buf[i+1:]
		if err != nil {
			return len(b), err
		}
	}
	return len(b), nil
}
