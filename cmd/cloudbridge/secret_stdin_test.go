package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
)

// TestSecretValueFromStdin: the value read from a stdin that is not a
// terminal is all of it (it stopped at the first NUL byte and dropped the
// rest), less the trailing newline; bytes that are not UTF-8 are refused
// rather than stored as U+FFFD; over the store's bound is too_large.
func TestSecretValueFromStdin(t *testing.T) {
	value := func(in string) (string, error) {
		c := &secretPutCmd{Conn: "c", Name: "s"}
		var stderr bytes.Buffer
		v, err := c.value(&env{stdin: strings.NewReader(in), stderr: &stderr})
		if err != nil {
			return "", err
		}
		var s any
		if err := json.Unmarshal(v, &s); err != nil {
			t.Fatalf("%q: value %s is not JSON: %v", in, v, err)
		}
		return string(v), nil
	}
	for in, want := range map[string]string{
		"a\x00bc\n":                     `"a\u0000bc"`,
		"line1\nline2\r\n":              `"line1\nline2"`,
		`{"login":"u","pw":"p"}` + "\n": `{"login":"u","pw":"p"}`,
	} {
		got, err := value(in)
		if err != nil || got != want {
			t.Errorf("stdin %q: value %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := value("\xff\xfeabc"); events.CodeOf(err) != events.CodeBadRequest || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("invalid UTF-8: %v, want bad_request", err)
	}
	if _, err := value(strings.Repeat("x", events.MaxBuiltinSecretSize+1)); events.CodeOf(err) != events.CodeTooLarge {
		t.Errorf("over the bound: %v, want too_large", err)
	}
	// At the bound, with the line end echo adds: the line end is not the
	// value's.
	if _, err := value(strings.Repeat("x", events.MaxBuiltinSecretSize) + "\r\n"); err != nil {
		t.Errorf("at the bound with a line end: %v", err)
	}
	if _, err := value(""); err == nil {
		t.Error("empty stdin: no error")
	}
}

// TestSecretValueFromFileKeepsItsBytes: --from-file (also - for stdin)
// stores the file as it is, its trailing newline included, as the README and
// the flag's help say; only the bare stdin form drops the line end.
func TestSecretValueFromFileKeepsItsBytes(t *testing.T) {
	c := &secretPutCmd{Conn: "c", Name: "s", FromFile: "-"}
	v, err := c.value(&env{stdin: strings.NewReader("pw\n"), stderr: &bytes.Buffer{}})
	if err != nil || string(v) != `"pw\n"` {
		t.Fatalf("--from-file - of \"pw\\n\": %s, %v", v, err)
	}
	out, _, _ := cb(t, "", "secret", "put", "--help")
	if help := strings.Join(strings.Fields(out), " "); !strings.Contains(help, "stored as they are") {
		t.Errorf("secret put --help does not say --from-file keeps the bytes:\n%s", out)
	}
}
