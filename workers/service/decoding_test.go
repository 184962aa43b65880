package service

import (
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestStrictDecodingThroughTheWire: request bodies are read as the schemas
// say. Names are exact-case, a name given twice is refused (encoding/json
// alone would take the last, case-insensitively: {"secret":"a","SECRET":"b"}
// would resolve b), and keys with NUL or control characters are refused, so
// ["login\u0000password"] never shares a fast-path memo entry with
// ["login","password"].
func TestStrictDecodingThroughTheWire(t *testing.T) {
	w := startWorker(t, embeddedConfig(t.TempDir()))
	nc, c := connect(t, w.ClientURL())
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "local-bio", Provider: events.ProviderBuiltin,
		Groups: []string{"bio"}, Secrets: []string{"*"}}, nil)
	for _, s := range []string{"a", "b"} {
		adminReq(t, c, events.ResourceSecrets, events.VerbPut, events.SecretPut{Connection: "local-bio", Name: s,
			Value: []byte(`{"login":"user-` + s + `","password":"password-` + s + `"}`)}, nil)
	}
	resolve := c.Subjects().Resolve("bio", "local-bio")
	// Warm the cache and the fast path's memo with the split keys.
	for i := 0; i < 3; i++ {
		msg := rawRequest(t, nc, resolve, []byte(`{"secret":"a","keys":["login","password"]}`))
		if werr := events.ReplyError(msg); werr != nil {
			t.Fatal(werr)
		}
	}
	put := c.Subjects().Admin(events.ResourceConnections, events.VerbPut)
	for _, tc := range []struct {
		name, subject, body, want string
	}{
		{"case variant", resolve, `{"SECRET":"b"}`, "SECRET"},
		{"case variant after the name", resolve, `{"secret":"a","SECRET":"b"}`, "SECRET"},
		{"duplicate", resolve, `{"secret":"a","secret":"b"}`, "twice"},
		{"duplicate in keys' object", resolve, `{"secret":"a","keys":["login"],"keys":["password"]}`, "twice"},
		{"NUL in a key", resolve, `{"secret":"a","keys":["login\u0000password"]}`, "keys[0]"},
		{"control character in a key", resolve, `{"secret":"a","keys":["login\npassword"]}`, "keys[0]"},
		{"overlong key", resolve, `{"secret":"a","keys":["` + strings.Repeat("k", 257) + `"]}`, "keys[0]"},
		{"admin duplicate", put, `{"name":"x","provider":"builtin","name":"local-bio","groups":["*"]}`, "twice"},
		{"admin case variant", put, `{"name":"x","Provider":"builtin"}`, "Provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := rawRequest(t, nc, tc.subject, []byte(tc.body))
			werr := events.ReplyError(msg)
			if werr == nil || werr.Code != events.CodeBadRequest || !strings.Contains(werr.Message, tc.want) {
				t.Fatalf("reply %v (%s), want bad_request naming %q", werr, msg.Data, tc.want)
			}
			if strings.Contains(string(msg.Data), "password-") {
				t.Fatalf("a refused request got a secret: %s", msg.Data)
			}
		})
	}
	// Nothing was stored by the refused admin puts.
	var list events.ConnectionList
	adminReq(t, c, events.ResourceConnections, events.VerbList, events.Empty{}, &list)
	if len(list.Connections) != 1 || !list.Connections[0].AllowsGroup("bio") || list.Connections[0].AllowsGroup("chem") {
		t.Fatalf("connections after refused puts: %+v", list.Connections)
	}
}
