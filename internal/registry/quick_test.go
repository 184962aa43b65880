package registry

import (
	"encoding/json"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// quickProvider reads the provider of records as the registry writes them,
// as a decode would, and declines any other layout.
func TestQuickProvider(t *testing.T) {
	for _, p := range []string{"builtin", "aws", "vault"} {
		rec := sealedRecord{V: 2, Gen: 7}
		rec.Public, _ = json.Marshal(events.Connection{Name: "c-1", Provider: p, Groups: []string{"g"}})
		raw, _ := json.Marshal(rec)
		got, ok := quickProvider(raw)
		if !ok || got != p {
			t.Fatalf("%s: quickProvider(%s) = %q, %v", p, raw, got, ok)
		}
		if got, ok := publicProvider(&connSlot{raw: raw}); !ok || got != p {
			t.Fatalf("%s: publicProvider = %q, %v", p, got, ok)
		}
	}
	for _, raw := range []string{
		``, `{}`, `{"v":2,"public":{"provider":"aws","name":"x"}}`,
		`{"v":2,"public":{"name":"x","provider":""}}`,
		`{"v":2,"public":{"name":"x\"","provider":"aws"}}`,
		`{"v":2,"public":{"name":"x","provider":"a\"ws"}}`,
		`{"v":2,"public":{"name":"x","provider":"aws`,
	} {
		if got, ok := quickProvider([]byte(raw)); ok {
			t.Fatalf("quickProvider(%s) = %q, want no answer", raw, got)
		}
	}
}
