package events

import (
	"testing"
	"time"
)

// cache.ttl "0s" is the default TTL, as documented (README Connections),
// and is stored without it; any other value is kept.
func TestCacheTTLZeroIsTheDefault(t *testing.T) {
	for _, tc := range []struct {
		body, stored string
		ttl          time.Duration
	}{
		{`{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"ttl":"0s"}}`, `{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{}}`, DefaultCacheTTL},
		{`{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"ttl":"0s","max_stale":"1m"}}`, `{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"max_stale":"1m"}}`, DefaultCacheTTL},
		{`{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"]}`, `{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"]}`, DefaultCacheTTL},
		{`{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"ttl":"1s"}}`, `{"name":"c","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"ttl":"1s"}}`, time.Second},
	} {
		var c Connection
		if err := Decode([]byte(tc.body), &c); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if got := c.TTL(); got != tc.ttl {
			t.Errorf("%s: TTL %v, want %v", tc.body, got, tc.ttl)
		}
		b, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.stored {
			t.Errorf("%s: stored as %s, want %s", tc.body, b, tc.stored)
		}
	}
}
