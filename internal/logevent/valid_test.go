package logevent

import (
	"encoding/json"
	"strings"
	"testing"
)

var validSeeds = []string{
	`{}`, `{"a":1}`, ` {"level":"info","time":"2026-11-24T02:30:00Z","msg":"x","n":[1,2.5,-0,1e3,1E+2,-3.25e-7,true,false,null,{}]} `,
	`{"a":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"}`, "{\"a\":\"caf\xc3\xa9 \xff\"}", `[]`, `"s"`, `0`, `-1`, `true`, `null`,
	`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":-}`, `{"a":+1}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`,
	"{\"a\":\"\x01\"}", `{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":1}}`, `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":tru}`, `{"a":nul}`,
	`{"a":1} x`, `{"a":"unterminated`, `{"a":`, `{`, ``, ` `, "{\"a\":1}\n", "\t{\"a\" : [ ] }\r\n", `{"a":"\`,
	`{"a":1,"a":2}`, `[[[[]]]]`, `{"a":[{"b":[{"c":{}}]}]}`, `{"a":-0.0e-0}`, `{"a":1.5E+10}`, `{"a":"\u"}`,
}

func TestValidJSONMatchesJSONValid(t *testing.T) {
	seeds := append([]string(nil), validSeeds...)
	seeds = append(seeds, strings.Repeat("[", 10000)+strings.Repeat("]", 10000), strings.Repeat("[", 10001)+strings.Repeat("]", 10001),
		`{"a":`+strings.Repeat(`{"a":`, 9998)+`1`+strings.Repeat("}", 9999)+`}`, `{"a":`+strings.Repeat(`{"a":`, 9999)+`1`+strings.Repeat("}", 10000)+`}`)
	for _, s := range seeds {
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("%.80q: validJSON %v, json.Valid %v", s, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Fatalf("%q: validJSON %v, json.Valid %v", s, got, want)
		}
	})
}

// TestValidJSONEveryPosition: a character that ends or breaks a plain run of
// string bytes at every position of a longer string, on each side of the
// eight-byte steps of the run.
func TestValidJSONEveryPosition(t *testing.T) {
	plain := "abcdefghijklmnopqrstuvwxyz0123456789ABCD"
	for _, special := range []string{`"`, `\`, `\"`, `\\`, `\n`, `\u00e9`, `\x`, "\x00", "\x1f", "\x7f", " ", "é", "\xff"} {
		for p := 0; p <= len(plain); p++ {
			for _, s := range []string{`{"k":"` + plain[:p] + special + plain[p:] + `"}`, `{"` + plain[:p] + special + plain[p:] + `":1}`,
				`"` + plain[:p] + special + plain[p:] + `"`, `["` + plain[:p] + special + plain[p:]} {
				if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
					t.Errorf("%q: validJSON %v, json.Valid %v", s, got, want)
				}
			}
		}
	}
}
