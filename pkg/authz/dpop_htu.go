package authz

import (
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
)

// RequestURI is the URI a proof for r must name: the configured origin (plus
// its path prefix) and r's path, else r's scheme and Host, or, trusted, the
// X-Forwarded-Proto and X-Forwarded-Host a proxy set.
func (d *DPoP) RequestURI(r *http.Request) string {
	path := r.URL.EscapedPath()
	if d.origin != nil {
		return d.origin.Scheme + "://" + d.origin.Host + strings.TrimSuffix(d.origin.EscapedPath(), "/") + path
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if d.cfg.TrustForwarded {
		if p := firstForwarded(r.Header.Get("X-Forwarded-Proto")); p != "" {
			scheme = p
		}
		if h := firstForwarded(r.Header.Get("X-Forwarded-Host")); h != "" {
			host = h
		}
	}
	return scheme + "://" + host + path
}

func firstForwarded(v string) string {
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// sameHTU compares a proof's htu with the request's URI after RFC 3986 §6.2.2
// and §6.2.3 normalisation, ignoring query and fragment (RFC 9449 §4.3).
// Both are almost always already in normal form (isNormalHTU), the URI as
// RequestURI built it and the htu as the client copied it: then they are
// equal as strings or not at all, and nothing is parsed.
func sameHTU(htu, uri string) bool {
	if isNormalHTU(htu) && isNormalHTU(uri) {
		return htu == uri
	}
	a, ok := normalizeHTU(htu)
	if !ok {
		return false
	}
	b, ok := normalizeHTU(uri)
	return ok && a == b
}

// normalizeHTU returns scheme://host[:port]/path of u, normalised: scheme
// and host in lower case, default port dropped, empty path "/", dot-segments
// removed, percent-encoding in upper case and unreserved characters decoded.
func normalizeHTU(u string) (string, bool) {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	p, err := url.Parse(u)
	if err != nil || p.Opaque != "" || p.User != nil || p.Host == "" {
		return "", false
	}
	scheme := strings.ToLower(p.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host := strings.ToLower(p.Hostname())
	if port := p.Port(); port != "" && !(scheme == "http" && port == "80") && !(scheme == "https" && port == "443") {
		host += ":" + port
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6 literal
	}
	path, ok := normalizePercent(p.EscapedPath())
	if !ok {
		return "", false
	}
	path = removeDotSegments(path)
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

// normalizePercent upper-cases percent-encodings and decodes those of
// unreserved characters (RFC 3986 §6.2.2.1, §6.2.2.2).
func normalizePercent(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return "", false
		}
		c := v[0]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(s[i+1:i+3]))
		}
		i += 2
	}
	return b.String(), true
}

// removeDotSegments is RFC 3986 §5.2.4.
func removeDotSegments(in string) string {
	if !strings.Contains(in, ".") {
		return in
	}
	var out []string
	segs := strings.Split(in, "/")
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if strings.HasPrefix(in, "/") && !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}

// isNormalHTU reports, cheaply and conservatively, whether normalizeHTU
// would return u unchanged: http(s), a lower-case host name or IPv4 address
// with no default port, a non-empty path of unreserved characters and "/"
// without dot-segments, no query or fragment. It may say no to a normal URI
// (a percent-encoding, an IPv6 literal): sameHTU then normalises.
func isNormalHTU(u string) bool {
	var rest string
	var defaultPort string
	switch {
	case strings.HasPrefix(u, "https://"):
		rest, defaultPort = u[len("https://"):], "443"
	case strings.HasPrefix(u, "http://"):
		rest, defaultPort = u[len("http://"):], "80"
	default:
		return false
	}
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return false
	}
	host, path := rest[:slash], rest[slash:]
	if colon := strings.IndexByte(host, ':'); colon >= 0 {
		port := host[colon+1:]
		host = host[:colon]
		if host == "" || port == "" || port == defaultPort {
			return false
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
		}
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '~' || c == '/' || c == '.') {
			return false
		}
		// A segment starting with a dot may be a dot-segment ("." or ".."):
		// leave it to removeDotSegments.
		if c == '.' && path[i-1] == '/' {
			return false
		}
	}
	return true
}
