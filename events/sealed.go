package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nkeys"
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
