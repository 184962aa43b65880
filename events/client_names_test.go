package events

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestClientRefusesBadNames: a group or connection that is not a name is
// bad_request naming the field, before anything is sent (the client has no
// NATS connection here: reaching it would panic).
func TestClientRefusesBadNames(t *testing.T) {
	c := NewClient(nil, "")
	ctx := context.Background()
	cases := []struct{ group, conn, field string }{
		{"bio.x", "local-bio", "group"},
		{"", "local-bio", "group"},
		{"b io", "local-bio", "group"},
		{"*", "local-bio", "group"},
		{"BIO", "local-bio", "group"},
		{"bio", "local-bio.x", "connection"},
		{"bio", ">", "connection"},
		{"bio", "", "connection"},
		{"bio", strings.Repeat("a", 65), "connection"},
	}
	for _, tc := range cases {
		calls := map[string]func() error{
			"resolve": func() error { _, err := c.Resolve(ctx, tc.group, tc.conn, ResolveRequest{Secret: "s"}); return err },
			"test":    func() error { _, err := c.Test(ctx, tc.group, tc.conn, TestRequest{}); return err },
			"token":   func() error { _, err := c.Token(ctx, tc.group, tc.conn, TokenRequest{}); return err },
		}
		for op, call := range calls {
			err := call()
			if !errors.Is(err, ErrBadRequest) || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Errorf("%s(%q, %q) = %v, want bad_request naming %s", op, tc.group, tc.conn, err, tc.field)
			}
		}
	}
}
