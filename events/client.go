package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
)

// Micro error headers, as set by the nats.go micro framework.
const (
	HeaderErrorCode = "Nats-Service-Error-Code"
	HeaderError     = "Nats-Service-Error"
)

// DefaultTimeout bounds a request when the context has no deadline.
const DefaultTimeout = 10 * time.Second

// Client is a typed client for services that request credentials from
// cloudbridge. It is safe for concurrent use.
//
// By default every reply is sealed: the client sends the public half of an
// ephemeral curve key (nkeys xkey) made for it in Cloudbridge-Reply-Key, the
// worker seals the reply body to it, and the client opens it, checking that
// it answers this very request (Cloudbridge-Request-Id) and has not expired.
// Anyone else on the bus, a subscriber on _INBOX.> included, sees ciphertext.
type Client struct {
	nc       *nats.Conn
	subjects Subjects
	// xkey seals with the client's ephemeral curve key; nil: replies are
	// not sealed.
	xkey *ReplySealer
	xpub string
}

// NewClient returns a client on nc using the subject prefix (empty for the
// default), with sealed replies.
func NewClient(nc *nats.Conn, prefix string) *Client {
	c := &Client{nc: nc, subjects: Subjects{Prefix: prefix}}
	if kp, err := nkeys.CreateCurveKeys(); err == nil {
		if s, err := NewReplySealer(kp); err == nil {
			c.xkey, c.xpub = s, s.PublicKey()
		}
	}
	return c
}

// Unsealed returns a copy of the client whose replies are not sealed.
func (c *Client) Unsealed() *Client {
	u := *c
	u.xkey, u.xpub = nil, ""
	return &u
}

// ReplyKey is the public curve key replies are sealed to ("" when unsealed).
func (c *Client) ReplyKey() string { return c.xpub }

// Subjects returns the subject builder the client uses.
func (c *Client) Subjects() Subjects { return c.subjects }

// Resolve resolves a secret through connection conn as group.
func (c *Client) Resolve(ctx context.Context, group, conn string, req ResolveRequest) (*ResolveReply, error) {
	var out ResolveReply
	if err := checkOpNames(group, conn); err != nil {
		return nil, err
	}
	if err := c.Request(ctx, c.subjects.Resolve(group, conn), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Test runs a connection's checks. A failed check is reported in the reply's
// steps, not as an error.
func (c *Client) Test(ctx context.Context, group, conn string, req TestRequest) (*TestReply, error) {
	var out TestReply
	if err := checkOpNames(group, conn); err != nil {
		return nil, err
	}
	if err := c.Request(ctx, c.subjects.Test(group, conn), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Token gets short-lived cloud credentials through connection conn.
func (c *Client) Token(ctx context.Context, group, conn string, req TokenRequest) (*TokenReply, error) {
	var out TokenReply
	if err := checkOpNames(group, conn); err != nil {
		return nil, err
	}
	if err := c.Request(ctx, c.subjects.Token(group, conn), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// checkOpNames refuses a group or connection that is not a name before
// anything is sent: a dot, a space or a wildcard would make another subject
// (no worker answers it, or NATS refuses it), so the caller would get
// unavailable or a raw NATS error instead of the bad_request naming the field.
func checkOpNames(group, conn string) error {
	if err := CheckName("group", group); err != nil {
		return err
	}
	return CheckName("connection", conn)
}

// Request sends req as JSON to subject and decodes the reply into out. A
// cloudbridge error reply comes back as an *Error, so errors.Is(err,
// ErrNotFound) and friends work; no responders is unavailable and a missed
// deadline is timeout.
func (c *Client) Request(ctx context.Context, subject string, req, out any) error {
	body, err := Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding request: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	m := nats.NewMsg(subject)
	m.Data = body
	id := nuid.Next()
	m.Header.Set(HeaderRequestID, id)
	if c.xkey != nil {
		m.Header.Set(HeaderReplyKey, c.xpub)
	}
	msg, err := c.nc.RequestMsgWithContext(ctx, m)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		// Wrapped, so a caller can tell it from an unavailable reply of a
		// worker (errors.Is(err, nats.ErrNoResponders)).
		return Wrap(CodeUnavailable, err, "no cloudbridge worker answers on %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return Errorf(CodeTimeout, "no reply on %s before the deadline", subject)
	case err != nil:
		return fmt.Errorf("requesting %s: %w", subject, err)
	}
	if c.xkey != nil {
		if err := c.open(msg, id); err != nil {
			return fmt.Errorf("reply from %s: %w", subject, err)
		}
	}
	if werr := ReplyError(msg); werr != nil {
		return werr
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("decoding reply from %s: %w", subject, err)
	}
	return nil
}

// open replaces a sealed reply's body by its plaintext, once it proved to
// answer request id. An unsealed success is refused: it could come from
// anyone; an unsealed error reply carries no secret and is kept.
func (c *Client) open(msg *nats.Msg, id string) error {
	sender := ""
	if msg.Header != nil {
		sender = msg.Header.Get(HeaderSenderKey)
	}
	if sender == "" {
		if msg.Header != nil && msg.Header.Get(HeaderErrorCode) != "" {
			return nil
		}
		return fmt.Errorf("%w: the reply is not sealed", ErrSealedReply)
	}
	body, err := c.xkey.Open(sender, id, time.Now(), msg.Data)
	if err != nil {
		return err
	}
	msg.Data = body
	return nil
}

// ReplyError returns the *Error carried by a reply, or nil for a success.
func ReplyError(msg *nats.Msg) *Error {
	codeHdr := ""
	if msg.Header != nil {
		codeHdr = msg.Header.Get(HeaderErrorCode)
	}
	if codeHdr == "" {
		return nil
	}
	var body ErrorReply
	if err := json.Unmarshal(msg.Data, &body); err == nil && body.Error != nil && body.Error.Code != "" {
		return body.Error
	}
	n, _ := strconv.Atoi(codeHdr)
	return &Error{Code: CodeForNumber(n), Message: msg.Header.Get(HeaderError)}
}
