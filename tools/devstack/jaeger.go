package devstack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Jaeger v2 (the all-in-one, in memory) beside the stack with Config.Tracing
// (`make run TRACING=1`): built from tools/jaeger by tools/jaeger/build.sh,
// run with deploy/jaeger/config.yaml, which opens only these ports.
const (
	JaegerOTLPPort   = 4318  // OTLP/HTTP, where the services export
	JaegerQueryPort  = 16686 // the query API `make trace` reads
	jaegerGRPCPort   = 16685 // the query API over gRPC (the config's, unused here)
	jaegerHealthPort = 13133
)

// OTLPEndpoint is the services' OTEL_EXPORTER_OTLP_ENDPOINT with tracing on.
var OTLPEndpoint = fmt.Sprintf("http://localhost:%d", JaegerOTLPPort)

// JaegerURL is Jaeger's query API with tracing on.
var JaegerURL = fmt.Sprintf("http://localhost:%d", JaegerQueryPort)

// JaegerPorts are the TCP ports Jaeger listens on.
func JaegerPorts() []int {
	return []int{JaegerOTLPPort, JaegerQueryPort, jaegerGRPCPort, jaegerHealthPort}
}

// BuildJaeger returns the path of the Jaeger binary, building it first with
// tools/jaeger/build.sh unless the one built from the current
// tools/jaeger/go.mod and go.sum is there (the build takes minutes; its
// progress goes to the stack's output).
func BuildJaeger(ctx context.Context, cfg Config) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(cfg.Root, "tools", "jaeger", "build.sh"))
	cmd.Dir = cfg.Root
	cmd.Env = append(os.Environ(), "GO="+cfg.GoCmd)
	cmd.Stderr = prefixWriter(cfg.Out, "jaeger")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("devstack: building Jaeger (tools/jaeger/build.sh): %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// jaegerCommand runs Jaeger on the stack's bind host; cancelling ctx stops it
// like a service.
func jaegerCommand(ctx context.Context, cfg Config, bin string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, "--config", "file:"+filepath.Join(cfg.Root, "deploy", "jaeger", "config.yaml"))
	cmd.Dir = cfg.DataDir
	cmd.Env = append(os.Environ(), "JAEGER_LISTEN_HOST="+cfg.BindHost)
	out := prefixWriter(cfg.Out, "jaeger")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = cfg.StopTimeout
	return cmd
}

// startJaeger builds and starts Jaeger and waits for its health endpoint,
// so the services' first spans have somewhere to go. stop ends it; call it
// after the services have stopped, so their last spans are flushed to it.
func startJaeger(ctx context.Context, cfg Config, failed chan<- error) (stop func(), err error) {
	bin, err := BuildJaeger(ctx, cfg)
	if err != nil {
		return nil, err
	}
	jctx, cancel := context.WithCancel(context.Background())
	cmd := jaegerCommand(jctx, cfg, bin)
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("devstack: start jaeger: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		err := cmd.Wait()
		if jctx.Err() == nil {
			failed <- fmt.Errorf("devstack: jaeger exited unexpectedly: %v", err)
		}
	}()
	stop = func() { cancel(); <-exited }
	health := fmt.Sprintf("http://%s/status", net.JoinHostPort(connectHost(cfg.BindHost), fmt.Sprint(jaegerHealthPort)))
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(health)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop, nil
			}
		}
		select {
		case <-exited:
			stop()
			return nil, fmt.Errorf("devstack: jaeger exited before it was healthy (see its log above)")
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("devstack: jaeger not healthy at %s within 30s", health)
		}
	}
}

// connectHost is where this machine reaches a listener bound to host.
func connectHost(host string) string {
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "127.0.0.1"
	}
	return host
}
