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
		{"replicas", func(s *Serve) { s.KVReplicas = 7 }, "--kv-replicas"},
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
