package events

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/nacl/box"
)

// SealedReply is the plaintext of a sealed reply body: the reply (success or
// error body) bound to the request it answers and to an expiry, so a
// captured reply cannot be replayed into another request or later.
type SealedReply struct {
	RequestID string          `json:"request_id"`
	Expires   time.Time       `json:"expires"`
	Body      json.RawMessage `json:"body"`
}

// SealedReplyTTL is how long a sealed reply may be opened after it was sealed.
const SealedReplyTTL = time.Minute

// ErrSealedReply means a sealed reply could not be opened: the wrong key, a
// tampered body, another request's reply, or an expired one.
var ErrSealedReply = errors.New("sealed reply cannot be opened")

// CheckReplyKey validates a Cloudbridge-Reply-Key header: a public curve key.
func CheckReplyKey(k string) error {
	if !nkeys.IsValidPublicCurveKey(k) {
		return Errorf(CodeBadRequest, "%s: not a public curve key (nkeys xkey, X…)", HeaderReplyKey)
	}
	return nil
}

// SealReply seals body for recipient with the sender's curve key pair,
// bound to request id and expires.
func SealReply(sender nkeys.KeyPair, recipient, id string, expires time.Time, body []byte) ([]byte, error) {
	if !json.Valid(body) {
		return nil, fmt.Errorf("sealing a reply: body is not JSON")
	}
	pt, err := json.Marshal(SealedReply{RequestID: id, Expires: expires.UTC(), Body: body})
	if err != nil {
		return nil, err
	}
	return sender.Seal(pt, recipient)
}

// OpenReply opens a sealed reply body from sender (its public curve key)
// with the recipient's key pair, and returns the reply body once it proved
// to answer request id and not to have expired at now.
func OpenReply(recipient nkeys.KeyPair, sender, id string, now time.Time, data []byte) ([]byte, error) {
	pt, err := recipient.Open(data, sender)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealedReply, err)
	}
	return checkSealed(pt, id, now)
}

// checkSealed decodes a sealed reply's plaintext and returns its body once it
// proved to answer request id and not to have expired at now.
func checkSealed(pt []byte, id string, now time.Time) ([]byte, error) {
	var r SealedReply
	if err := json.Unmarshal(pt, &r); err != nil {
		return nil, fmt.Errorf("%w: plaintext: %v", ErrSealedReply, err)
	}
	if r.RequestID != id {
		return nil, fmt.Errorf("%w: it answers request %q, not %q (a replayed reply)", ErrSealedReply, r.RequestID, id)
	}
	if !now.Before(r.Expires) {
		return nil, fmt.Errorf("%w: expired at %s", ErrSealedReply, r.Expires.Format(time.RFC3339))
	}
	return r.Body, nil
}

// sharedKeyMemo bounds the shared keys a ReplySealer keeps: one per
// requester key seen (each typed client has one).
const sharedKeyMemo = 4096

// ReplySealer seals and opens replies with one curve key pair, in the wire
// format of nkeys xkeys (Seal/Open: "xkv1", a 24-byte nonce, then a NaCl box),
// but computes the curve25519 shared key of a peer once and keeps it
// (bounded): the scalar multiplication nkeys does on every Seal and Open
// costs more than sealing the reply itself. It is safe for concurrent use.
type ReplySealer struct {
	pub   string
	priv  [32]byte
	mu    sync.Mutex
	memo  map[string]*[32]byte
	limit int
}

// NewReplySealer returns a sealer of kp, a curve key pair.
func NewReplySealer(kp nkeys.KeyPair) (*ReplySealer, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil || prefix != nkeys.PrefixByteCurve || len(raw) != 32 {
		return nil, errors.New("not a curve key pair")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	s := &ReplySealer{pub: pub, memo: map[string]*[32]byte{}, limit: sharedKeyMemo}
	copy(s.priv[:], raw)
	return s, nil
}

// PublicKey is the sealer's public curve key (X…), sent in
// Cloudbridge-Sender-Key (worker) or Cloudbridge-Reply-Key (requester).
func (s *ReplySealer) PublicKey() string { return s.pub }

// shared is the shared key with peer (a public curve key), memoized.
func (s *ReplySealer) shared(peer string) (*[32]byte, error) {
	s.mu.Lock()
	k, ok := s.memo[peer]
	s.mu.Unlock()
	if ok {
		return k, nil
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteCurve, []byte(peer))
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("%q: not a public curve key", peer)
	}
	var pub [32]byte
	copy(pub[:], raw)
	k = new([32]byte)
	box.Precompute(k, &pub, &s.priv)
	s.mu.Lock()
	if len(s.memo) >= s.limit {
		for old := range s.memo { // evict one, arbitrary
			delete(s.memo, old)
			break
		}
	}
	s.memo[peer] = k
	s.mu.Unlock()
	return k, nil
}

// Seal seals body for recipient, bound to request id and expires, as
// SealReply does. body must be one JSON document (the reply the worker
// encoded); it is not scanned again: the sealer runs on the hot path.
func (s *ReplySealer) Seal(recipient, id string, expires time.Time, body []byte) ([]byte, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("sealing a reply: empty body")
	}
	qid, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	// The plaintext as json.Marshal(SealedReply{…}) writes it.
	pt := make([]byte, 0, len(body)+len(qid)+64)
	pt = append(append(append(pt, `{"request_id":`...), qid...), `,"expires":"`...)
	pt = expires.UTC().AppendFormat(pt, time.RFC3339Nano)
	pt = append(append(append(pt, `","body":`...), body...), '}')
	k, err := s.shared(recipient)
	if err != nil {
		return nil, err
	}
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(nkeys.XKeyVersionV1)+len(nonce)+len(pt)+box.Overhead)
	out = append(append(out, nkeys.XKeyVersionV1...), nonce[:]...)
	return box.SealAfterPrecomputation(out, pt, &nonce, k), nil
}

// Open opens a reply sealed by sender, as OpenReply does.
func (s *ReplySealer) Open(sender, id string, now time.Time, data []byte) ([]byte, error) {
	const hdr = len(nkeys.XKeyVersionV1) + 24
	if len(data) <= hdr || string(data[:len(nkeys.XKeyVersionV1)]) != nkeys.XKeyVersionV1 {
		return nil, fmt.Errorf("%w: not an xkey sealed message", ErrSealedReply)
	}
	k, err := s.shared(sender)
	if err != nil {
		return nil, fmt.Errorf("%w: sender key: %v", ErrSealedReply, err)
	}
	var nonce [24]byte
	copy(nonce[:], data[len(nkeys.XKeyVersionV1):hdr])
	pt, ok := box.OpenAfterPrecomputation(nil, data[hdr:], &nonce, k)
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrSealedReply, nkeys.ErrCouldNotDecrypt)
	}
	return checkSealed(pt, id, now)
}
