// Command devtenant runs the local Auth0-compatible tenant.
//
//	devtenant [serve] [-addr :8400] [-issuer http://localhost:8400/] [-tenant-file deploy/tenant.yaml] [-dev-dir deploy/dev] [-data-dir .data/devtenant]
//	devtenant token --user alice@authmesh.dev [--audience https://api.authmesh.dev] [--scope "..."]
//	devtenant token --client orders-service [--audience https://api.authmesh.dev]
//	devtenant healthcheck
//
// The token subcommand asks a running devtenant (DEVTENANT_URL, default
// http://localhost:8400) with the password or client-credentials grant, the
// way `auth0 test token` asks a real tenant, so the token always verifies
// against the keys that tenant serves.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/authmesh/authmesh/pkg/platform/health"
	"github.com/authmesh/authmesh/tools/devtenant/tenant"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args)
	case "token":
		err = token(ctx, args, os.Stdout)
	case "healthcheck":
		err = healthcheck(ctx)
	default:
		err = fmt.Errorf("unknown command %q; use serve, token or healthcheck", cmd)
	}
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "devtenant:") {
			msg = "devtenant: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", env("DEVTENANT_ADDR", ":8400"), "listen address (DEVTENANT_ADDR)")
	issuer := fs.String("issuer", env("DEVTENANT_ISSUER", "http://localhost:8400/"), "token issuer, with trailing slash (DEVTENANT_ISSUER)")
	tenantFile := fs.String("tenant-file", env("DEVTENANT_TENANT_FILE", "deploy/tenant.yaml"), "Deploy CLI tenant file (DEVTENANT_TENANT_FILE)")
	devDir := fs.String("dev-dir", env("DEVTENANT_DEV_DIR", "deploy/dev"), "dev users, secrets, keywords (DEVTENANT_DEV_DIR)")
	dataDir := fs.String("data-dir", env("DEVTENANT_DATA_DIR", ".data/devtenant"), "keys and Management API changes (DEVTENANT_DATA_DIR)")
	rateLimit := fs.Int("mgmt-rate-limit", envInt("DEVTENANT_MGMT_RATE_LIMIT", 1000), "Management API requests per client per minute (DEVTENANT_MGMT_RATE_LIMIT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	srv, err := tenant.New(tenant.Config{Issuer: *issuer, TenantFile: *tenantFile, DevDir: *devDir, DataDir: *dataDir,
		Logger: log, ManagementRateLimit: *rateLimit, ManagementRateWindow: time.Minute})
	if err != nil {
		return err
	}
	defer srv.Close()
	hs := &http.Server{
		Addr: *addr, Handler: srv.Handler(),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second, IdleTimeout: 60 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	log.Info("devtenant listening", "addr", ln.Addr().String(), "issuer", *issuer)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("devtenant shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(env("DEVTENANT_LOG_LEVEL", "info"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// healthcheck checks the devtenant serving on DEVTENANT_ADDR's port, from
// inside its container.
func healthcheck(ctx context.Context) error {
	return health.Local(ctx, env("DEVTENANT_ADDR", ":8400"), 3*time.Second)
}

func token(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	user := fs.String("user", "", "dev user email (password grant)")
	client := fs.String("client", "", "M2M client id (client-credentials grant)")
	audience := fs.String("audience", "", "audience (default: the API; for --client, the client's only grant)")
	scope := fs.String("scope", "", "scope (default: openid profile email and every scope of the API; M2M: all granted)")
	password := fs.String("password", "", "user password (default: from the dev users file)")
	base := fs.String("url", env("DEVTENANT_URL", "http://localhost:8400"), "devtenant base URL (DEVTENANT_URL)")
	issuer := fs.String("issuer", env("DEVTENANT_ISSUER", "http://localhost:8400/"), "issuer of the running devtenant (DEVTENANT_ISSUER)")
	devDir := fs.String("dev-dir", env("DEVTENANT_DEV_DIR", "deploy/dev"), "dev data directory (DEVTENANT_DEV_DIR)")
	tenantFile := fs.String("tenant-file", env("DEVTENANT_TENANT_FILE", "deploy/tenant.yaml"), "tenant file (DEVTENANT_TENANT_FILE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*user == "") == (*client == "") {
		return errors.New("token: give exactly one of --user <email> or --client <client_id>")
	}
	// The tenant files give the defaults (password, secret, scopes, audience);
	// without them the contract's conventions still work.
	model, merr := tenant.LoadModel(*issuer, *tenantFile, *devDir)
	form := url.Values{}
	if *user != "" {
		aud, sc, pw := *audience, *scope, *password
		if aud == "" {
			aud = "https://api.authmesh.dev"
		}
		if pw == "" {
			pw = "dev-password"
			if merr == nil {
				for _, u := range model.Users {
					if strings.EqualFold(u.Email, *user) {
						pw = u.Password
					}
				}
			}
		}
		if sc == "" {
			sc = "openid profile email"
			if merr == nil && model.APIs[aud] != nil {
				sc += " " + strings.Join(model.APIs[aud].Scopes, " ")
			}
		}
		form.Set("grant_type", "password")
		form.Set("client_id", "authmesh-cli")
		form.Set("username", *user)
		form.Set("password", pw)
		form.Set("scope", sc)
		form.Set("audience", aud)
	} else {
		aud, secret := *audience, *client+"-dev-secret"
		if merr == nil {
			if c := model.Clients[*client]; c != nil {
				secret = c.Secret
				if aud == "" && len(c.Grants) == 1 {
					for a := range c.Grants {
						aud = a
					}
				}
			}
		}
		if aud == "" {
			aud = "https://api.authmesh.dev"
		}
		form.Set("grant_type", "client_credentials")
		form.Set("client_id", *client)
		form.Set("client_secret", secret)
		form.Set("audience", aud)
		if *scope != "" {
			form.Set("scope", *scope)
		}
	}
	tok, err := tenant.RequestToken(ctx, strings.TrimSuffix(*base, "/")+"/oauth/token", form)
	if uerr := (*url.Error)(nil); errors.As(err, &uerr) {
		return fmt.Errorf("is devtenant running at %s? %w", *base, err)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}
