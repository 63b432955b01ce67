package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmesh/authmesh/tools/devstack"
	"github.com/chromedp/chromedp"
)

// The addresses of contract §1; the SPA's config.js points at them.
const (
	spaURL    = "http://localhost:8404/"
	tenantURL = "http://localhost:8400/"
	password  = "dev-password"
)

// requireBrowser is set by .ci/run: there the test must run, never skip.
func requireBrowser() bool { return os.Getenv("REQUIRE_BROWSER") == "1" }

// skipOrFail skips with a loud reason, or fails when the browser test is required.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireBrowser() {
		t.Fatalf("REQUIRE_BROWSER=1: %s", msg)
	}
	t.Skipf("SKIPPING the browser end-to-end test: %s (set REQUIRE_BROWSER=1 to make this a failure)", msg)
}

// chromiumPath finds Debian's Chromium (CHROMIUM_PATH overrides).
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("CHROMIUM_PATH"), "/usr/bin/chromium", "/usr/bin/chromium-browser"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	skipOrFail(t, "Chromium not found at /usr/bin/chromium; install it with `apt-get install -y chromium` or set CHROMIUM_PATH")
	return ""
}

// portsFree waits a little for the stack's ports (a previous run may still be
// shutting down), then gives up.
func portsFree(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy := devstack.PortsBusy()
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			skipOrFail(t, "ports %v are in use (is `make run` or docker compose up?); the browser test starts the stack itself on the contract ports %v", busy, devstack.Ports())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// repoRoot is the repository root (go.work, deploy/, web/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := devstack.FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// browser starts its own headless Chromium (own profile, so no cookie or
// storage is shared between users) and returns a tab's context. The flags are
// the issue's: --headless --no-sandbox --disable-gpu
// --disable-background-networking --no-first-run, on top of chromedp's
// defaults.
func browser(t *testing.T, parent context.Context, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.NoFirstRun,
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// Start the browser now, without a deadline (a deadline on the first run
	// would bound the browser's whole life), so a broken install fails here.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	return ctx
}

// stepper runs the named steps of one user's session. Every step, pass or
// fail, leaves a screenshot; a failure also reports what the page showed.
type stepper struct {
	t   *testing.T
	ctx context.Context
	dir string
	n   int
	who string
}

func (s *stepper) do(name string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	s.t.Helper()
	s.n++
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	err := chromedp.Do(ctx, steps...)
	file := s.screenshot(fmt.Sprintf("%s-%02d-%s", s.who, s.n, name))
	if err != nil {
		s.t.Fatalf("%s: step %q: %v\n  page: %s\n  screenshot: %s", s.who, name, err, s.pageState(), file)
	}
}

func (s *stepper) screenshot(name string) string {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	file := filepath.Join(s.dir, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		s.t.Logf("write screenshot: %v", err)
		return ""
	}
	return file
}

// pageState is the URL and the visible message (or the start of the page's
// text), for failure reports.
func (s *stepper) pageState() string {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	url, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return fmt.Sprintf("(page state unavailable: %v)", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => { const n = document.getElementById("notice"); return n && !n.hidden ? n.innerText : (document.body ? document.body.innerText.slice(0, 400) : ""); })()`))
	if err != nil {
		text = fmt.Sprintf("(text unavailable: %v)", err)
	}
	return fmt.Sprintf("url=%s text=%q", url, strings.TrimSpace(text))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](s *stepper, expr string) T {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		s.t.Fatalf("%s: evaluate %s: %v", s.who, expr, err)
	}
	return v
}

// text reads an element's text content.
func (s *stepper) text(css string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(css)))
	if err != nil {
		s.t.Fatalf("%s: text of %s: %v\n  page: %s", s.who, css, err, s.pageState())
	}
	return strings.TrimSpace(v)
}

// waitJS polls a JavaScript condition from Go until it is true or the step's
// deadline passes. Polling from Go, not in the page, survives navigations
// (the login leaves the app and comes back). The SPA's data-* attributes make
// the conditions exact rather than timing guesses.
func waitJS(cond string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		var last error
		for {
			ok, err := chromedp.Evaluate[bool](cond)(ctx, t)
			if err == nil && ok {
				return nil
			}
			if err != nil {
				last = err
			}
			select {
			case <-ctx.Done():
				if last != nil {
					return fmt.Errorf("waiting for %s: %w (last evaluation error: %v)", cond, ctx.Err(), last)
				}
				return fmt.Errorf("waiting for %s: %w", cond, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
}

func visible(css string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(css))
}
func click(css string) chromedp.Action[chromedp.Void] { return chromedp.Click(chromedp.CSS(css)) }
func setValue(css, v string) chromedp.Action[chromedp.Void] {
	return chromedp.SetValue(chromedp.CSS(css), v)
}

// orderMugs places an order of qty mugs from the shop tab, then runs then.
// The tab reloads the catalog: wait for its fresh rows, or the input found
// before the re-render is gone when it is typed into.
func orderMugs(qty string, then ...chromedp.Action[chromedp.Void]) []chromedp.Action[chromedp.Void] {
	return append([]chromedp.Action[chromedp.Void]{
		click(`#tab-shop`),
		waitJS(`document.getElementById("catalog").dataset.state === "loaded"`),
		visible(`#qty-mug`),
		setValue(`#qty-mug`, qty),
		click(`#place-order`),
	}, then...)
}

// The tenant's login form: devtenant's, and Auth0's Universal Login alike.
const (
	userField = `input[name="username"], input[name="email"], input[type="email"]`
	passField = `input[name="password"], input[type="password"]`
	submitBtn = `form button[type="submit"], form input[type="submit"], button[name="action"]`
)

// login goes from the signed-out page through the tenant's form back to the
// signed-in SPA.
func (s *stepper) login(email string) {
	s.t.Helper()
	s.do("signed-out", 30*time.Second,
		chromedp.Navigate(spaURL),
		visible(`#login-main`),
	)
	s.do("tenant-login-form", 30*time.Second,
		click(`#login-main`),
		waitJS(fmt.Sprintf(`location.href.startsWith(%q)`, tenantURL+"authorize")),
		visible(userField),
		chromedp.SendKeys(chromedp.CSS(userField), email),
		chromedp.SendKeys(chromedp.CSS(passField), password),
	)
	s.do("signed-in", 30*time.Second,
		click(submitBtn),
		waitJS(fmt.Sprintf(`location.href.startsWith(%q) && document.body.dataset.ready === "true"`, spaURL)),
		waitJS(fmt.Sprintf(`document.getElementById("session-user").textContent === %q`, email)),
	)
	if url := eval[string](s, `location.href`); strings.Contains(url, "code=") || strings.Contains(url, "state=") {
		s.t.Errorf("%s: the authorization response stayed in the address bar: %s", s.who, url)
	}
}
