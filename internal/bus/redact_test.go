package bus

import "testing"

// TestRedactURL: no password or token of a NATS URL reaches a message, also
// in a URL given without its scheme (nats.go accepts user:pass@host:port).
func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4333", "nats://127.0.0.1:4333"},
		{"nats://user:sekret@127.0.0.1:1", "nats://127.0.0.1:1"},
		{"nats://user:sekret@h:1, tls://tok3n@h:2", "nats://h:1,tls://h:2"},
		{"user:sekret@127.0.0.1:1", "127.0.0.1:1"},
		{"tok3n@127.0.0.1:1", "127.0.0.1:1"},
		{"127.0.0.1:1", "127.0.0.1:1"},
		{"nats://us%zzer:sekret@h:1", "nats://h:1"},
		{"us%zzer:sekret@h:1", "h:1"},
	} {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
