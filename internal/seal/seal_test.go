package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newKey(t *testing.T) Key {
	t.Helper()
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	k, err := NewKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	cur, prev, other := newKey(t), newKey(t), newKey(t)
	s := New(cur, prev)
	old := New(prev)
	env, err := s.Seal([]byte("password01"), []byte("b/k"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env.Data, []byte("password01")) {
		t.Fatal("plaintext visible in ciphertext")
	}
	if env.KeyID != cur.ID() {
		t.Fatalf("kid = %s, want %s", env.KeyID, cur.ID())
	}
	oldEnv, _ := old.Seal([]byte("legacy"), []byte("b/k"))
	tampered := env
	tampered.Data = append([]byte{}, env.Data...)
	tampered.Data[0] ^= 1
	cases := []struct {
		name    string
		sealer  *Sealer
		env     Envelope
		ad      string
		want    string
		wantErr error
	}{
		{"current key", s, env, "b/k", "password01", nil},
		{"previous key opens old records", s, oldEnv, "b/k", "legacy", nil},
		{"moved to another record", s, env, "b/other", "", ErrOpen},
		{"tampered", s, tampered, "b/k", "", ErrOpen},
		{"unknown key", New(other), env, "b/k", "", ErrUnknownKey},
		{"bad nonce", s, Envelope{KeyID: cur.ID(), Nonce: []byte{1}, Data: env.Data}, "b/k", "", ErrOpen},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.sealer.Open(tc.env, []byte(tc.ad))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, 32)
	cases := []struct {
		in string
		ok bool
	}{
		{base64.StdEncoding.EncodeToString(raw) + "\n", true},
		{base64.RawURLEncoding.EncodeToString(raw), true},
		{base64.StdEncoding.EncodeToString(raw[:16]), false},
		{"not base64!", false},
		{"", false},
	}
	for _, tc := range cases {
		_, err := ParseKey(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseKey(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestGenerateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "master.key")
	k, err := GenerateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadKeyFile(path)
	if err != nil || k2.ID() != k.ID() {
		t.Fatalf("reload: %v, id %s vs %s", err, k2.ID(), k.ID())
	}
	if _, err := GenerateKeyFile(path); err == nil {
		t.Fatal("overwrote an existing key file")
	}
}

// A master key file readable or writable by group or others is refused,
// naming the fix; mode 0600 (or 0400) is fine.
func TestLoadKeyFileRefusesLoosePermissions(t *testing.T) {
	dir := t.TempDir()
	raw := make([]byte, KeySize)
	text := base64.StdEncoding.EncodeToString(raw) + "\n"
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o620} {
		path := filepath.Join(dir, "k"+mode.String())
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyFile(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: %v, want an error naming chmod 600", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		path := filepath.Join(dir, "ok"+mode.String())
		if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeyFile(path); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
}
