package resolve

import (
	"context"
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
)

// An error quoting a requester's secret name (up to 2,048 bytes) or key
// quotes at most events.QuoteMax bytes of it, as for every other name: the
// message is also the Nats-Service-Error header.
func TestErrorsClipSecretNames(t *testing.T) {
	w, _ := newFastWorker(t)
	long := "db" + strings.Repeat("x", 2000)
	outside := "zz" + strings.Repeat("y", 2000)
	for _, tc := range []struct {
		in   events.ResolveRequest
		code events.Code
		want string
	}{
		{events.ResolveRequest{Secret: outside}, events.CodeForbidden, `secret "` + events.Clip(outside, events.QuoteMax) + `" is outside the allowlist of connection "c1"`},
		{events.ResolveRequest{Secret: long, Keys: []string{"k" + strings.Repeat("z", 200)}}, events.CodeNotFound,
			`secret "` + events.Clip(long, events.QuoteMax) + `" has no key "` + events.Clip("k"+strings.Repeat("z", 200), events.QuoteMax) + `"`},
	} {
		var f endpoint.Fields
		_, err := w.handleResolve(context.Background(), newRequest(t, "bio", "c1", tc.in), &f)
		if events.CodeOf(err) != tc.code || err.Error() != tc.want {
			t.Errorf("secret %.10s…: err = %v (%s), want %s %q", tc.in.Secret, err, events.CodeOf(err), tc.code, tc.want)
		}
	}
}

// An unknown connection is `connection "x": not found` from resolve and
// audit fingerprint alike, as from the admin verbs (the registry's wording).
func TestUnknownConnectionMessage(t *testing.T) {
	w, _ := newFastWorker(t)
	const want = `connection "nope": not found`
	var f endpoint.Fields
	_, err := w.handleResolve(context.Background(), newRequest(t, "bio", "nope", events.ResolveRequest{Secret: "db1"}), &f)
	if events.CodeOf(err) != events.CodeNotFound || err.Error() != want {
		t.Errorf("resolve: err = %v, want not_found %q", err, want)
	}
	f = endpoint.Fields{}
	req := &fakeRequest{subject: events.Subjects{}.Admin(events.ResourceAudit, events.VerbFingerprint), data: []byte(`{"connection":"nope","secret":"db1"}`)}
	_, err = w.handleFingerprint(context.Background(), req, &f)
	if events.CodeOf(err) != events.CodeNotFound || err.Error() != want {
		t.Errorf("fingerprint: err = %v, want not_found %q", err, want)
	}
}
