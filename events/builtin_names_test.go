package events

import (
	"regexp"
	"testing"
)

// TestValidBuiltinSecretNameMatchesThePattern checks the hand-written
// matcher against the pattern itself: every string of up to 5 characters
// over an alphabet with a character of each class, and some longer ones.
func TestValidBuiltinSecretNameMatchesThePattern(t *testing.T) {
	re := regexp.MustCompile(builtinSecretPattern)
	alphabet := []byte("aZ09_=/-.\x00 *é")
	check := func(s string) {
		t.Helper()
		if got, want := validBuiltinSecretName(s), re.MatchString(s); got != want {
			t.Fatalf("validBuiltinSecretName(%q) = %v, the pattern says %v", s, got, want)
		}
	}
	var walk func(prefix []byte, n int)
	walk = func(prefix []byte, n int) {
		check(string(prefix))
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			walk(append(prefix, c), n-1)
		}
	}
	walk(nil, 5)
	for _, s := range []string{"db01", "app/db.password", "x.y.z", "_a=b/c-d.e_f", "a.b..c", "a.b.", ".a", "=a", "/a", "-a",
		"prod/payments/api-key", "a.b.c.d.e.f.g.h", "héllo", "a\nb"} {
		check(s)
	}
}

// TestSecretPutValidateValue: the value is a JSON object or a string, valid
// JSON (checked without decoding it), whatever its content.
func TestSecretPutValidateValue(t *testing.T) {
	for _, c := range []struct {
		value string
		ok    bool
	}{
		{`"s3cr3t"`, true},
		{`"with \"escapes\" \u00e9 \ud800"`, true},
		{`{"user":"u","password":"p","n":[1,2,{"x":null}]}`, true},
		{`{"dup":1,"dup":2}`, true},
		{`{}`, true},
		{`"unterminated`, false},
		{`"bad \x escape"`, false},
		{`{"a":}`, false},
		{`{"a":1}}`, false},
		{`{"a":1} {}`, false},
		{`"a" "b"`, false},
		{`[1]`, false},
		{`12`, false},
		{`null`, false},
		{`true`, false},
	} {
		in := SecretPut{Connection: "c", Name: "n", Value: []byte(c.value)}
		if err := in.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate of value %s: %v, want ok %v", c.value, err, c.ok)
		}
	}
}
