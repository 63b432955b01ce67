// Command webserve serves the SPA's static files (web/) in the compose stack,
// where no Go toolchain or devstack runs: `webserve` listens on WEB_ADDR
// (default :8404) and serves WEB_DIR (default /web); `webserve healthcheck`
// exits 0 when the server answers 200, for the scratch image's HEALTHCHECK.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/authmesh/authmesh/pkg/platform/health"
)

func main() {
	if err := run(os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "webserve:", err)
		os.Exit(1)
	}
}

func run(args []string, getenv func(string) string) error {
	addr := getenv("WEB_ADDR")
	if addr == "" {
		addr = ":8404"
	}
	dir := getenv("WEB_DIR")
	if dir == "" {
		dir = "/web"
	}
	if len(args) == 1 && args[0] == "healthcheck" {
		return health.Local(context.Background(), addr, 2*time.Second)
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown arguments %q (usage: webserve [healthcheck])", args)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("WEB_DIR %q is not a directory", dir)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv := &http.Server{
		Addr:              addr,
		Handler:           handler(dir, log),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("serving the SPA", "addr", addr, "dir", dir)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// handler serves dir with the headers a static SPA wants: no MIME sniffing,
// no framing by other origins, and no caching of the HTML shell, so a new
// deploy is picked up on the next load.
func handler(dir string, log *slog.Logger) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		start := time.Now()
		files.ServeHTTP(w, r)
		log.Debug("request", "method", r.Method, "path", r.URL.Path, "latency", time.Since(start))
	})
}
