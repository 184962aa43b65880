package registry

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/cloudbridge/cloudbridge/events"
)

// copyConnection is a deep copy of c equal to what decoding its encoding
// (events.Marshal, then json.Unmarshal) gives, field for field, without the
// encoding and decoding: a connection put gives the view its own copy of
// the connection it wrote (the view must not share the caller's), and
// works on a copy of the request's (cloneConnection) in case the bucket
// must decide. ok is false when the round trip could change or refuse
// something a copy would keep (a string that is not valid UTF-8, a
// negative duration, a service account key that does not compact): the
// caller then takes the round trip itself. Strings are shared (immutable);
// slices and blocks are copied; a list that omitempty drops when empty
// comes back nil, as decoding it does; a service account key comes back
// compacted, as its encoding writes it. TestCopyConnectionIsTheRoundTrip
// fills every field of the type (new ones included) and compares.
func copyConnection(c events.Connection) (out events.Connection, ok bool) {
	if !validStrings(c.Name, c.Provider, c.Description) || !validList(c.Groups) || !validList(c.Secrets) {
		return events.Connection{}, false
	}
	out = c
	out.Groups = copyList(c.Groups, false)
	out.Secrets = copyList(c.Secrets, false)
	if c.Cache != nil {
		if c.Cache.TTL < 0 || c.Cache.MaxStale < 0 {
			return events.Connection{}, false
		}
		cp := *c.Cache
		out.Cache = &cp
	}
	if c.Tokens != nil {
		if c.Tokens.MaxDuration < 0 || !validList(c.Tokens.Scopes) {
			return events.Connection{}, false
		}
		t := *c.Tokens
		t.Scopes = copyList(c.Tokens.Scopes, true)
		out.Tokens = &t
	}
	if c.Limits != nil {
		l := *c.Limits
		out.Limits = &l
	}
	if c.AWS != nil {
		a := *c.AWS
		if a.Duration < 0 || !validStrings(a.Region, a.Auth, a.AccessKeyID, a.SecretAccessKey, a.SessionToken,
			a.RoleARN, a.ExternalID, a.SessionName, a.Endpoint) {
			return events.Connection{}, false
		}
		if a.Events != nil {
			e := *a.Events
			if e.DegradedTTL < 0 || !utf8.ValidString(e.QueueURL) {
				return events.Connection{}, false
			}
			a.Events = &e
		}
		out.AWS = &a
	}
	if c.GCP != nil {
		g := *c.GCP
		if !validStrings(g.Project, g.Auth, g.Impersonate, g.Endpoint) || !validList(g.Delegates) {
			return events.Connection{}, false
		}
		g.Delegates = copyList(g.Delegates, true)
		if len(g.ServiceAccountKey) == 0 {
			g.ServiceAccountKey = nil
		} else {
			var b bytes.Buffer
			if json.Compact(&b, g.ServiceAccountKey) != nil {
				return events.Connection{}, false
			}
			g.ServiceAccountKey = b.Bytes()
		}
		if g.Events != nil {
			e := *g.Events
			if e.DegradedTTL < 0 || !validStrings(e.Subscription, e.Endpoint) {
				return events.Connection{}, false
			}
			g.Events = &e
		}
		out.GCP = &g
	}
	return out, true
}

// copyList copies a list of strings: nil stays nil, empty stays empty,
// unless omitEmpty (the field is omitted when empty, so decoded as nil).
func copyList(l []string, omitEmpty bool) []string {
	if l == nil || (omitEmpty && len(l) == 0) {
		return nil
	}
	return append(make([]string, 0, len(l)), l...)
}

func validStrings(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

func validList(l []string) bool { return validStrings(l...) }
