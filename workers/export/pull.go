package export

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/bus"
)

// The collector's pull requests (batch.go). They are the requests the
// client's Fetch and FetchNoWait send (the same subject, body and reply
// inbox, one subscription per request), read without the client's
// per-message costs: its Fetch hands each message from the subscription's
// channel to a second channel through a goroutine of its own, with a
// select that starts a new timer (time.After) per message, and tokenizes
// the ack subject again; that was about a sixth of the worker's CPU per
// event and three of its allocations (BenchmarkExportCloudWatch's profile).
// Here the collector takes the messages from the subscription's channel
// itself. What a request ends with (a status, the count reached, a silence)
// is handled as the client does (pullBatch.take).

// puller sends an export consumer's pull requests.
type puller struct {
	nc      *nats.Conn
	subject string // the consumer's CONSUMER.MSG.NEXT API subject
}

func newPuller(js jetstream.JetStream, cons jetstream.Consumer) *puller {
	ci := cons.CachedInfo()
	return &puller{nc: js.Conn(), subject: bus.APIPrefix(js.Options()) + "CONSUMER.MSG.NEXT." + ci.Stream + "." + ci.Name}
}

// fetch asks for at most n messages, waiting up to wait for them (0: only
// what is there now, FetchNoWait's request).
func (p *puller) fetch(n int, wait time.Duration) (*pullBatch, error) {
	if n < 1 {
		return nil, fmt.Errorf("%w: batch size must be at least 1", nats.ErrInvalidArg)
	}
	body := make([]byte, 0, 64)
	body = append(body, `{"batch":`...)
	body = strconv.AppendInt(body, int64(n), 10)
	if wait > 0 {
		body = append(body, `,"expires":`...)
		body = strconv.AppendInt(body, int64(wait), 10)
	} else {
		body = append(body, `,"no_wait":true`...)
	}
	body = append(body, '}')
	// Room for every message asked for and the statuses (as the client's).
	b := &pullBatch{nc: p.nc, ch: make(chan *nats.Msg, 2*n), want: n, silence: wait + time.Second}
	var err error
	inbox := p.nc.NewInbox()
	if b.sub, err = p.nc.ChanSubscribe(inbox, b.ch); err != nil {
		return nil, err
	}
	if err := p.nc.PublishRequest(p.subject, inbox, body); err != nil {
		_ = b.sub.Unsubscribe()
		return nil, err
	}
	return b, nil
}

// pullBatch is the replies to one pull request. One goroutine at a time
// reads it (the collector, or what it hands it to).
type pullBatch struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	ch      chan *nats.Msg
	want    int           // messages asked for
	got     int           // messages received
	silence time.Duration // with nothing received for as long, the request is over (the client's)
	timer   *time.Timer   // for silence, started when a receive has to wait
	done    bool
	err     error
	slab    []pulledMsg // the messages' wrappers, allocated a few hundred at a time
}

// next is the request's next message; nil when the request is over (Error
// says how) or, with stopped, when stop was closed first. A message already
// received is returned without waiting, unless stop is closed.
func (b *pullBatch) next(stop <-chan struct{}) (m jetstream.Msg, stopped bool) {
	for !b.done {
		var nm *nats.Msg
		select {
		case nm = <-b.ch:
			select {
			case <-stop:
				// Taken, but not to be delivered: given back with the rest.
				if pm := b.take(nm); pm != nil {
					return pm, true
				}
				return nil, true
			default:
			}
		default:
			if b.timer == nil {
				b.timer = time.NewTimer(b.silence)
			} else {
				b.timer.Reset(b.silence)
			}
			select {
			case nm = <-b.ch:
			case <-b.timer.C:
				b.finish(nil)
				return nil, false
			case <-stop:
				return nil, true
			}
		}
		if pm := b.take(nm); pm != nil {
			return pm, false
		}
	}
	return nil, false
}

// drain calls fn for each message the request still brings, until it is
// over.
func (b *pullBatch) drain(fn func(jetstream.Msg)) {
	for {
		m, _ := b.next(nil)
		if m == nil {
			return
		}
		fn(m)
	}
}

// Error is why the request ended, when not by its count, a timeout or no
// messages (as the client's MessageBatch.Error).
func (b *pullBatch) Error() error { return b.err }

// finish ends the request: no more messages are received.
func (b *pullBatch) finish(err error) {
	b.done, b.err = true, err
	_ = b.sub.Unsubscribe()
	if b.timer != nil {
		b.timer.Stop()
	}
}

// take is a received message as a jetstream.Msg, or nil for a status (which
// ends the request, or not: a heartbeat), as the client's Fetch reads them.
func (b *pullBatch) take(m *nats.Msg) jetstream.Msg {
	user, err := pullStatus(m)
	if !user {
		if err != nil || m.Header.Get("Status") != "100" {
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrMaxBytesExceeded) {
				err = nil
			}
			b.finish(err)
		}
		return nil
	}
	if len(b.slab) == 0 {
		b.slab = make([]pulledMsg, min(b.want-b.got, 256))
	}
	pm := &b.slab[0]
	b.slab = b.slab[1:]
	pm.msg, pm.nc = m, b.nc
	if b.got++; b.got >= b.want {
		b.finish(nil)
	}
	return pm
}

// pullStatus reports whether m is a message of the stream (user) or else
// the error its status means (nil for a heartbeat), as the client's
// checkMsg does.
func pullStatus(m *nats.Msg) (user bool, err error) {
	if len(m.Data) > 0 || len(m.Header) == 0 {
		return true, nil
	}
	status, descr := m.Header.Get("Status"), m.Header.Get("Description")
	switch status {
	case "":
		return true, nil
	case "400":
		return false, jetstream.ErrBadRequest
	case "503":
		return false, nats.ErrNoResponders
	case "404":
		return false, jetstream.ErrNoMessages
	case "408":
		return false, nats.ErrTimeout
	case "100":
		return false, nil
	case "423":
		return false, jetstream.ErrPinIDMismatch
	case "409":
		d := strings.ToLower(descr)
		switch {
		case strings.Contains(d, "message size exceeds maxbytes"):
			return false, jetstream.ErrMaxBytesExceeded
		case strings.Contains(d, "batch completed"):
			return false, jetstream.ErrBatchCompleted
		case strings.Contains(d, "consumer deleted"):
			return false, jetstream.ErrConsumerDeleted
		case strings.Contains(d, "leadership change"):
			return false, jetstream.ErrConsumerLeadershipChanged
		case strings.Contains(d, "server shutdown"):
			return false, jetstream.ErrServerShutdown
		}
	}
	return false, fmt.Errorf("nats: %s", descr)
}

// pulledMsg is a message of a pull request: jetstream.Msg, acked and read
// as the client's own.
type pulledMsg struct {
	msg  *nats.Msg
	nc   *nats.Conn
	ackd atomic.Bool // acked, nak'ed or terminated: nothing more is sent
}

var (
	ackAck      = []byte("+ACK")
	ackNak      = []byte("-NAK")
	ackProgress = []byte("+WPI")
	ackTerm     = []byte("+TERM")
)

func (m *pulledMsg) Data() []byte         { return m.msg.Data }
func (m *pulledMsg) Headers() nats.Header { return m.msg.Header }
func (m *pulledMsg) Subject() string      { return m.msg.Subject }
func (m *pulledMsg) Reply() string        { return m.msg.Reply }
func (m *pulledMsg) Ack() error           { return m.reply(ackAck, true) }
func (m *pulledMsg) Nak() error           { return m.reply(ackNak, true) }
func (m *pulledMsg) InProgress() error    { return m.reply(ackProgress, false) }
func (m *pulledMsg) Term() error          { return m.reply(ackTerm, true) }

func (m *pulledMsg) NakWithDelay(delay time.Duration) error {
	if delay <= 0 {
		return m.Nak()
	}
	return m.reply(fmt.Appendf(nil, "%s {\"delay\": %d}", ackNak, delay.Nanoseconds()), true)
}

func (m *pulledMsg) TermWithReason(reason string) error {
	if reason == "" {
		return m.Term()
	}
	return m.reply(fmt.Appendf(nil, "%s %s", ackTerm, reason), true)
}

// DoubleAck acks and waits for the server to confirm it (within ctx's
// deadline, or 5 s).
func (m *pulledMsg) DoubleAck(ctx context.Context) error {
	if err := m.check(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if _, err := m.nc.RequestWithContext(ctx, m.msg.Reply, ackAck); err != nil {
		return err
	}
	m.ackd.Store(true)
	return nil
}

func (m *pulledMsg) check() error {
	if m.msg.Sub == nil {
		return jetstream.ErrMsgNotBound
	}
	if m.msg.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	if m.ackd.Load() {
		return jetstream.ErrMsgAlreadyAckd
	}
	return nil
}

// reply publishes body on the ack subject; final marks the message settled
// (the client's ackReply without sync).
func (m *pulledMsg) reply(body []byte, final bool) error {
	if err := m.check(); err != nil {
		return err
	}
	if err := m.nc.Publish(m.msg.Reply, body); err != nil {
		return err
	}
	if final {
		m.ackd.Store(true)
	}
	return nil
}

// Metadata reads the ack subject as the client's Metadata does:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>…]
func (m *pulledMsg) Metadata() (*jetstream.MsgMetadata, error) {
	if m.msg.Sub == nil {
		return nil, jetstream.ErrMsgNotBound
	}
	reply := m.msg.Reply
	if reply == "" {
		return nil, jetstream.ErrMsgNoReply
	}
	n := strings.Count(reply, ".") + 1
	if n < 9 || (n > 9 && n < 11) {
		return nil, fmt.Errorf("%w: %s", jetstream.ErrNotJSMessage, "invalid format of ACK subject")
	}
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return nil, fmt.Errorf("%w: %s", jetstream.ErrNotJSMessage, "invalid format of ACK subject: subject should start with $JS.ACK")
	}
	// domain, account hash, stream, consumer, delivered, sseq, cseq, tm, pending
	var tok [9]string
	for i := range tok {
		if n == 9 && i < 2 {
			continue
		}
		tok[i], rest, _ = strings.Cut(rest, ".")
	}
	if tok[0] == "_" {
		tok[0] = ""
	}
	meta := &jetstream.MsgMetadata{
		Domain:       tok[0],
		Stream:       tok[2],
		Consumer:     tok[3],
		NumDelivered: parseMetaNum(tok[4]),
		NumPending:   parseMetaNum(tok[8]),
		Timestamp:    time.Unix(0, int64(parseMetaNum(tok[7]))),
	}
	meta.Sequence.Stream = parseMetaNum(tok[5])
	meta.Sequence.Consumer = parseMetaNum(tok[6])
	return meta, nil
}

// parseMetaNum is the client's ParseNum: a decimal number, 0 for anything
// else.
func parseMetaNum(d string) uint64 {
	if len(d) == 0 {
		return 0
	}
	var n uint64
	for _, c := range []byte(d) {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}
