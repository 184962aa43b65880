// Package seal encrypts records at rest with AES-256-GCM under a master key.
// The associated data binds a ciphertext to its record (bucket and key), so it
// cannot be moved to another record, and every envelope names the id of the
// key that sealed it, so keys can be rotated.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of a master key: 32 bytes, AES-256.
const KeySize = 32

// ErrUnknownKey means an envelope was sealed by a key this sealer does not have.
var ErrUnknownKey = errors.New("sealed with an unknown master key")

// ErrOpen means a ciphertext failed authentication: wrong key, tampered, or moved.
var ErrOpen = errors.New("ciphertext failed authentication")

// Key is a master key and its id.
type Key struct {
	id   string
	aead cipher.AEAD
	raw  []byte
}

// ID is the key id written into envelopes: a hash prefix, safe to show.
func (k Key) ID() string { return k.id }

// NewKey makes a Key from 32 raw bytes.
func NewKey(raw []byte) (Key, error) {
	if len(raw) != KeySize {
		return Key{}, fmt.Errorf("master key is %d bytes, want %d", len(raw), KeySize)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return Key{}, fmt.Errorf("creating cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return Key{}, fmt.Errorf("creating GCM: %w", err)
	}
	sum := sha256.Sum256(append([]byte("cloudbridge key id\x00"), raw...))
	return Key{id: hex.EncodeToString(sum[:6]), aead: aead, raw: append([]byte(nil), raw...)}, nil
}

// ParseKey reads a key written as base64 (standard or URL alphabet, padding
// optional) of 32 bytes, surrounding whitespace ignored.
func ParseKey(text string) (Key, error) {
	s := strings.TrimSpace(text)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(s); err == nil {
			return NewKey(raw)
		}
	}
	return Key{}, errors.New("master key is not base64 of 32 bytes (make one with: head -c 32 /dev/urandom | base64)")
}

// LoadKeyFile reads a base64 key from a file.
func LoadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("reading master key file: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("master key file %s: %w", path, err)
	}
	return k, nil
}

// GenerateKeyFile writes a new random key to path with mode 0600, creating
// the directory, and fails if the file exists.
func GenerateKeyFile(path string) (Key, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return Key{}, fmt.Errorf("generating master key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, fmt.Errorf("creating key directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Key{}, fmt.Errorf("creating master key file: %w", err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(raw) + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return Key{}, fmt.Errorf("writing master key file: %w", werr)
	}
	return NewKey(raw)
}

// Envelope is a sealed value as stored.
type Envelope struct {
	KeyID string `json:"kid"`
	Nonce []byte `json:"nonce"`
	Data  []byte `json:"data"`
}

// Sealer seals under the current key and opens with the current or any previous key.
type Sealer struct {
	current Key
	keys    map[string]Key
}

// New returns a sealer sealing under current and opening with current and previous.
func New(current Key, previous ...Key) *Sealer {
	s := &Sealer{current: current, keys: map[string]Key{current.id: current}}
	for _, k := range previous {
		if k.aead != nil {
			s.keys[k.id] = k
		}
	}
	return s
}

// CurrentID is the id of the key new envelopes are sealed under.
func (s *Sealer) CurrentID() string { return s.current.id }

// Derive returns a 32-byte key for purpose info derived from the current
// master key with HKDF-SHA256 (no salt): the master key itself never leaves
// the sealer, and keys of different purposes are independent.
func (s *Sealer) Derive(info string) ([]byte, error) {
	if len(s.current.raw) == 0 {
		return nil, errors.New("no master key to derive from")
	}
	return hkdf.Key(sha256.New, s.current.raw, nil, info, 32)
}

// Seal encrypts plaintext bound to ad.
func (s *Sealer) Seal(plaintext, ad []byte) (Envelope, error) {
	nonce := make([]byte, s.current.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Envelope{}, fmt.Errorf("reading nonce: %w", err)
	}
	return Envelope{KeyID: s.current.id, Nonce: nonce, Data: s.current.aead.Seal(nil, nonce, plaintext, ad)}, nil
}

// Open decrypts an envelope bound to ad.
func (s *Sealer) Open(env Envelope, ad []byte) ([]byte, error) {
	k, ok := s.keys[env.KeyID]
	if !ok {
		return nil, fmt.Errorf("key id %q: %w", env.KeyID, ErrUnknownKey)
	}
	if len(env.Nonce) != k.aead.NonceSize() {
		return nil, ErrOpen
	}
	out, err := k.aead.Open(nil, env.Nonce, env.Data, ad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}
