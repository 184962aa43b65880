package jsonenc

import (
	"bytes"
	"encoding/json"
	"strings"
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

// TestAppendStringEveryPosition: a character to escape (or a non-ASCII one)
// at every position of a longer string, on each side of the eight-byte
// steps of the plain run.
func TestAppendStringEveryPosition(t *testing.T) {
	plain := "abcdefghijklmnopqrstuvwxyz0123456789ABCD"
	for _, special := range []string{`"`, `\`, "\x00", "\x1f", "\x7f", " ", "é", "\u2028", "\u2029", "\xff", "\xe2\x80"} {
		for p := 0; p <= len(plain); p++ {
			check(t, plain[:p]+special+plain[p:])
			check(t, plain[:p]+special+plain[p:]+special)
		}
	}
}

// BenchmarkAppendString: a 200-byte JSON log line (quotes to escape), as
// the CloudWatch request bodies carry.
func BenchmarkAppendString(b *testing.B) {
	s := `{"level":"info","time":"2026-11-24T02:30:00.123456Z","msg":"event","id":12345,"pad":"` + strings.Repeat("p", 112) + `"}`
	buf := make([]byte, 0, 4*len(s))
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		buf = AppendString(buf[:0], s)
	}
}
