package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
)

var tricky = []string{"", "plain", `"quoted" \back\`, "\x00\x01\b\f\n\r\t\x1f\x7f", "<&>", "\u2028\u2029",
	"héllo wörld ✓ 𝄞", "\xff\xfe bad \xc3", "a\xe2\x80", "\ufffd"}

// want is encoding/json's encoding of s with HTML escaping off.
func want(t *testing.T, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func check(t *testing.T, s string) {
	t.Helper()
	if got, w := AppendString([]byte("x"), s)[1:], want(t, s); !bytes.Equal(got, w) {
		t.Fatalf("%q: %s, encoding/json %s", s, got, w)
	}
}

func TestAppendStringIsEncodingJSON(t *testing.T) {
	for _, s := range tricky {
		check(t, s)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range tricky {
		f.Add(s)
	}
	f.Fuzz(check)
}
