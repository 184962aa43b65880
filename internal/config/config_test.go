package config

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Serve)
		want string // substring of the error; "" = valid
	}{
		{"defaults", func(*Serve) {}, ""},
		{"external NATS without a key", func(s *Serve) { s.URL = "nats://x:4222" }, "master key is required"},
		{"external NATS with a key file", func(s *Serve) { s.URL, s.MasterKeyFile = "nats://x:4222", "/k" }, ""},
		{"both key forms", func(s *Serve) { s.MasterKeyFile, s.MasterKey = "/k", "abc" }, "alternatives"},
		{"bad listen", func(s *Serve) { s.Listen = "4222" }, "--listen"},
		{"bad http addr", func(s *Serve) { s.HTTPAddr = "nope" }, "--http-addr"},
		{"http off", func(s *Serve) { s.HTTPAddr = "off" }, ""},
		{"bad prefix", func(s *Serve) { s.Prefix = "Cloud Bridge" }, "--prefix"},
		{"password without user", func(s *Serve) { s.Password = "p" }, "--nats-user"},
		{"two auth methods", func(s *Serve) { s.User, s.Token = "u", "t" }, "alternatives"},
		{"missing nkey file", func(s *Serve) { s.NKey = "/does/not/exist" }, "--nats-nkey"},
		{"cert without key", func(s *Serve) { s.TLSCert = "/c" }, "go together"},
		{"tiny timeout", func(s *Serve) { s.RequestTimeout = time.Millisecond }, "--request-timeout"},
		{"no cache", func(s *Serve) { s.CacheMaxEntries = 0 }, "--cache-max-entries"},
		{"logs subjects overlap", func(s *Serve) { s.LogsSubjects = []string{"cloudbridge.v1.>"} }, "overlaps"},
		{"logs subject wildcard all", func(s *Serve) { s.LogsSubjects = []string{">"} }, "overlaps"},
		{"bad logs subject", func(s *Serve) { s.LogsSubjects = []string{"logs..x"} }, "subject"},
		{"logs subjects wildcard prefix", func(s *Serve) { s.LogsSubjects = []string{"*.v1.>"} }, "overlaps cloudbridge's own subjects"},
		{"logs subjects another prefix", func(s *Serve) { s.Prefix, s.LogsSubjects = "acme.cb", []string{"acme.>"} }, "(acme.cb.>)"},
		{"logs subjects JetStream API", func(s *Serve) { s.LogsSubjects = []string{"$JS.API.>"} }, "NATS's own subjects"},
		{"logs subjects inboxes", func(s *Serve) { s.LogsSubjects = []string{"_INBOX.*"} }, "NATS's own subjects"},
		{"logs subjects overlap each other", func(s *Serve) { s.LogsSubjects = []string{"app.>", "app.web"} }, `"app.>" and "app.web" overlap`},
		{"logs subjects disjoint", func(s *Serve) { s.LogsSubjects = []string{"logs.>", "app.web", "cloudbridge"} }, ""},
		{"replicas", func(s *Serve) { s.KVReplicas = 7 }, "--kv-replicas"},
		{"memory limit", func(s *Serve) { s.MemoryLimit = "512MiB" }, ""},
		{"bad memory limit", func(s *Serve) { s.MemoryLimit = "lots" }, "--memory-limit"},
		{"memory limit unit", func(s *Serve) { s.MemoryLimit = "512 furlongs" }, "--memory-limit"},
		{"zero memory limit", func(s *Serve) { s.MemoryLimit = "0MiB" }, "--memory-limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Defaults()
			tc.edit(&s)
			err := s.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{"auto": -1, "": -1, "off": 0, "OFF": 0, "1048576": 1 << 20,
		"150MiB": 150 << 20, "2GiB": 2 << 30, "2 GiB": 2 << 30, "500MB": 500e6, "64KiB": 64 << 10} {
		got, err := ParseMemoryLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"MiB", "-5MiB", "1.5GiB", "10XB", "99999999999TiB"} {
		if _, err := ParseMemoryLimit(in); err == nil {
			t.Errorf("ParseMemoryLimit(%q): no error", in)
		}
	}
}
