// Package tenanttest writes variants of a tenant file (deploy/tenant.yaml)
// for tests: a copy in the test's temporary directory with one part
// replaced. The test fails when the part is no longer in the file, so a
// test of a changed tenant never silently runs against the unchanged one.
//
//	file := tenanttest.WithPoP(t, "deploy/tenant.yaml", "") // no proof_of_possession
package tenanttest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// OptionalDPoP is the API's proof_of_possession in deploy/tenant.yaml:
// DPoP allowed, not required.
const OptionalDPoP = "    proof_of_possession:\n      mechanism: dpop\n      required: false\n"

// Replace writes a copy of file with the first old replaced by repl and
// returns its path.
func Replace(tb testing.TB, file, old, repl string) string {
	tb.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		tb.Fatalf("tenanttest: %v", err)
	}
	if !strings.Contains(string(raw), old) {
		tb.Fatalf("tenanttest: %s no longer has the part this test replaces:\n%s", file, old)
	}
	return write(tb, strings.Replace(string(raw), old, repl, 1))
}

// WithPoP writes a copy of file whose API has pop as its
// proof_of_possession in place of OptionalDPoP ("" removes it).
func WithPoP(tb testing.TB, file, pop string) string {
	tb.Helper()
	return Replace(tb, file, OptionalDPoP, pop)
}

var tokenDialect = regexp.MustCompile(`(?m)^([ \t]*token_dialect:[ \t]*)\S+[ \t]*$`)

// WithDialect writes a copy of file whose resource servers all use the
// token dialect dialect.
func WithDialect(tb testing.TB, file, dialect string) string {
	tb.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		tb.Fatalf("tenanttest: %v", err)
	}
	if !tokenDialect.Match(raw) {
		tb.Fatalf("tenanttest: %s has no token_dialect to replace", file)
	}
	return write(tb, tokenDialect.ReplaceAllString(string(raw), "${1}"+dialect))
}

func write(tb testing.TB, content string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "tenant.yaml")
	if err := os.WriteFile(out, []byte(content), 0o600); err != nil {
		tb.Fatalf("tenanttest: %v", err)
	}
	return out
}
