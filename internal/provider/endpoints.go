package provider

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/cloudbridge/cloudbridge/events"
)

// DefaultAllowEndpoints are the hosts a connection may send credentials to
// unless serve --allow-endpoints says otherwise: the clouds' own domains.
var DefaultAllowEndpoints = []string{"*.amazonaws.com", "*.amazonaws.com.cn", "*.googleapis.com"}

// AllowFlag names the setting in errors.
const AllowFlag = "--allow-endpoints (CLOUDBRIDGE_ALLOW_ENDPOINTS)"

// Endpointer is implemented by kinds whose block may name a URL the
// connection's credentials are sent to (an endpoint override, a key's
// token_uri). Endpoints lists those given, by wire name; absent ones are
// left out (the cloud's default endpoint is always allowed).
type Endpointer interface {
	Endpoints(c *events.Connection) []Field
}

// Allowlist is the set of hosts credentials may be sent to: host patterns,
// '*' matching any run of characters, a pattern without a port matching any
// port. The zero Allowlist allows everything (no check).
type Allowlist struct {
	patterns []hostPattern
	set      bool
}

type hostPattern struct {
	host, port string // port "" matches any port
}

// ParseAllowlist reads host patterns ("*.amazonaws.com", "127.0.0.1",
// "[::1]:8443", "localhost:*"). An empty list allows no endpoint override.
func ParseAllowlist(patterns []string) (Allowlist, error) {
	a := Allowlist{set: true}
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		if strings.Contains(p, "/") || strings.ContainsAny(p, " \t\r\n\x00@") {
			return Allowlist{}, fmt.Errorf("%q is not a host pattern (give hosts like *.amazonaws.com or 127.0.0.1:8080, no scheme or path)", p)
		}
		var hp hostPattern
		switch {
		case strings.HasPrefix(p, "["):
			if i := strings.Index(p, "]"); i > 0 && i == len(p)-1 {
				hp.host = p[1:i]
			} else {
				h, port, err := net.SplitHostPort(p)
				if err != nil {
					return Allowlist{}, fmt.Errorf("%q is not a host pattern: %v", p, err)
				}
				hp.host, hp.port = h, port
			}
		case strings.Count(p, ":") == 1:
			h, port, _ := strings.Cut(p, ":")
			hp.host, hp.port = h, port
		case strings.Count(p, ":") > 1:
			hp.host = p // a bare IPv6 address
		default:
			hp.host = p
		}
		if hp.host == "" {
			return Allowlist{}, fmt.Errorf("%q is not a host pattern: no host", p)
		}
		a.patterns = append(a.patterns, hp)
	}
	return a, nil
}

// MustAllowlist is ParseAllowlist for patterns known to be valid.
func MustAllowlist(patterns ...string) Allowlist {
	a, err := ParseAllowlist(patterns)
	if err != nil {
		panic(err)
	}
	return a
}

// Enforced reports whether the allowlist checks anything.
func (a Allowlist) Enforced() bool { return a.set }

// Allows reports whether rawURL (an http(s) URL) is within the allowlist.
func (a Allowlist) Allows(rawURL string) bool {
	if !a.set {
		return true
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	for _, p := range a.patterns {
		if globMatch(p.host, host) && (p.port == "" || globMatch(p.port, port)) {
			return true
		}
	}
	return false
}

// globMatch matches s against pattern, '*' matching any run of characters.
func globMatch(pattern, s string) bool {
	for {
		star := strings.IndexByte(pattern, '*')
		if star < 0 {
			return pattern == s
		}
		if !strings.HasPrefix(s, pattern[:star]) {
			return false
		}
		s = s[star:]
		pattern = pattern[star+1:]
		if pattern == "" {
			return true
		}
		// Try every split point for the rest.
		for i := 0; i <= len(s); i++ {
			if globMatch(pattern, s[i:]) {
				return true
			}
		}
		return false
	}
}

// hostOf is the host[:port] of a URL, for messages.
func hostOf(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		return u.Host
	}
	return rawURL
}
