package events

import (
	"encoding/json"
	"testing"
)

// BenchmarkDecodeConnection is the strict decode of an admin connection put
// (the body of internal/registry's BenchmarkRegistryAtScale), against
// encoding/json's plain Unmarshal of the same body (no strictness): the
// ratio is the strictness's cost.
func BenchmarkDecodeConnection(b *testing.B) {
	body := []byte(`{"name":"c0000001","provider":"builtin","groups":["bio"],"secrets":["*"],"cache":{"ttl":"5m"}}`)
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var c Connection
			if err := Decode(body, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var c Connection
			if err := jsonUnmarshal(body, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var jsonUnmarshal = json.Unmarshal
