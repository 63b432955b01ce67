package tenant

import (
	"errors"
	"fmt"
	"os"
	"regexp"

	"gopkg.in/yaml.v3"
)

var keywordPattern = regexp.MustCompile(`(##|@@)([A-Za-z0-9_]+)(##|@@)`)

// readTenantFile reads the Deploy CLI file with its keywords replaced.
func (l *loader) readTenantFile() (*tenantFile, error) {
	keywords, err := l.keywords()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(l.tenantPath)
	if err != nil {
		return nil, fmt.Errorf("tenant file: %v; fix: set DEVTENANT_TENANT_FILE to deploy/tenant.yaml", err)
	}
	// Keywords are replaced in scalar values only (comments may mention them),
	// with the Deploy CLI's meaning: ##KEY## inside a string, @@KEY@@ as a
	// whole value that may be a list.
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: not valid Deploy CLI YAML: %v", l.tenantPath, err)
	}
	l.replaceKeywords(&doc, keywords)
	var tf tenantFile
	if err := doc.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%s: not valid Deploy CLI YAML: %v", l.tenantPath, err)
	}
	return &tf, nil
}

// keywords reads the keyword values; the file is optional.
func (l *loader) keywords() (map[string]any, error) {
	keywords := map[string]any{"AUTH0_MANAGEMENT_AUDIENCE": l.m.MgmtAud}
	raw, err := os.ReadFile(l.keywordsPath)
	if errors.Is(err, os.ErrNotExist) {
		return keywords, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", l.keywordsPath, err)
	}
	var kw map[string]any
	if err := yaml.Unmarshal(raw, &kw); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %v; fix: write KEY: value lines", l.keywordsPath, err)
	}
	for k, v := range kw {
		switch v.(type) {
		case string, []any:
		default:
			l.bad(l.keywordsPath, "keyword %s: value must be a string or a list; fix: quote it", k)
		}
		keywords[k] = v
	}
	return keywords, nil
}

// replaceKeywords replaces the keywords in n's scalars and below.
func (l *loader) replaceKeywords(n *yaml.Node, keywords map[string]any) {
	for _, c := range n.Content {
		l.replaceKeywords(c, keywords)
	}
	if n.Kind != yaml.ScalarNode || !keywordPattern.MatchString(n.Value) {
		return
	}
	if parts := keywordPattern.FindStringSubmatch(n.Value); parts[0] == n.Value && parts[1] == "@@" && parts[3] == "@@" {
		v, ok := keywords[parts[2]]
		if !ok {
			l.bad(l.tenantPath, "line %d: keyword %s has no value; fix: add %s: <value> to %s", n.Line, n.Value, parts[2], l.keywordsPath)
			return
		}
		var repl yaml.Node
		if err := repl.Encode(v); err != nil {
			l.bad(l.keywordsPath, "keyword %s: %v", parts[2], err)
			return
		}
		*n = repl
		return
	}
	n.Value = keywordPattern.ReplaceAllStringFunc(n.Value, func(s string) string {
		parts := keywordPattern.FindStringSubmatch(s)
		if parts[1] != "##" || parts[3] != "##" {
			l.bad(l.tenantPath, "line %d: %s mixes ## and @@; fix: write ##%s## or @@%s@@", n.Line, s, parts[2], parts[2])
			return s
		}
		v, ok := keywords[parts[2]]
		if !ok {
			l.bad(l.tenantPath, "line %d: keyword %s has no value; fix: add %s: <value> to %s", n.Line, s, parts[2], l.keywordsPath)
			return s
		}
		sv, ok := v.(string)
		if !ok {
			l.bad(l.tenantPath, "line %d: keyword %s is a list; fix: use @@%s@@ as the whole value", n.Line, s, parts[2])
			return s
		}
		return sv
	})
}
