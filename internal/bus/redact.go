package bus

import (
	"net/url"
	"strings"
)

// RedactURL drops the user info (user and password, or a token) from a NATS
// URL, or a comma-separated list of them, for logs and error messages; also
// from one given without a scheme (user:pass@host:4222, which nats.go accepts
// as nats://). Every NATS URL that is logged or put in an error goes through
// it: the CLI's and the worker's.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		bare := !strings.Contains(p, "://")
		if bare {
			p = "nats://" + p
		}
		u, err := url.Parse(p)
		switch {
		case err == nil && u.User != nil:
			u.User = nil
			parts[i] = u.String()
			if bare {
				parts[i] = strings.TrimPrefix(parts[i], "nats://")
			}
		case err != nil && strings.Contains(p, "@"):
			// Unparsable: keep only what follows the last @ of the authority.
			rest := p[strings.Index(p, "://")+3:]
			host, path, _ := strings.Cut(rest, "/")
			host = host[strings.LastIndex(host, "@")+1:]
			parts[i] = p[:strings.Index(p, "://")+3] + host
			if path != "" {
				parts[i] += "/" + path
			}
			if bare {
				parts[i] = strings.TrimPrefix(parts[i], "nats://")
			}
		}
	}
	return strings.Join(parts, ",")
}
