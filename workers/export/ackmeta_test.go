package export

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// TestAckMeta: the ack subject's forms and what is not one of them (which
// prepare leaves to Metadata).
func TestAckMeta(t *testing.T) {
	for _, tc := range []struct {
		reply  string
		stream string
		seq    uint64
		ts     int64
		ok     bool
	}{
		{"$JS.ACK.LOGS.exp.1.42.7.1764650000123456789.9", "LOGS", 42, 1764650000123456789, true},
		{"$JS.ACK._.ACCHASH.LOGS.exp.2.43.8.1764650000123456790.0.tok", "LOGS", 43, 1764650000123456790, true},
		{"$JS.ACK.dom.ACCHASH.LOGS.exp.2.43.8.1764650000123456790.0", "LOGS", 43, 1764650000123456790, true},
		{"$JS.ACK.dom.ACCHASH.LOGS.exp.2.43.8.1764650000123456790.0.tok.more", "LOGS", 43, 1764650000123456790, true},
		{"", "", 0, 0, false},
		{"_INBOX.abc", "", 0, 0, false},
		{"$JS.ACK.LOGS.exp.1.42.7.17646500001.9.x", "", 0, 0, false},       // 8 tokens: neither form
		{"$JS.ACK.LOGS.exp.1.42.7", "", 0, 0, false},                       // too short
		{"$JS.ACK.LOGS.exp.1.4x.7.1764650000123456789.9", "", 0, 0, false}, // not a number
		{"$JS.ACK.LOGS.exp.1..7.1764650000123456789.9", "", 0, 0, false},
		{"$JS.ACK.LOGS.exp.1.42.7.99999999999999999999.9", "", 0, 0, false}, // 20 digits
		{"$JS.ACK.LOGS.exp.1.42.7.9999999999999999999.9", "", 0, 0, false},  // past int64
		{"$JS.ACK..exp.1.42.7.1764650000123456789.9", "", 0, 0, false},      // no stream
		{"$JS.ACKX.LOGS.exp.1.42.7.1764650000123456789.9", "", 0, 0, false},
	} {
		stream, seq, ts, ok := ackMeta(tc.reply)
		if ok != tc.ok || stream != tc.stream || seq != tc.seq || ts != tc.ts {
			t.Errorf("ackMeta(%q) = %q, %d, %d, %v; want %q, %d, %d, %v", tc.reply, stream, seq, ts, ok, tc.stream, tc.seq, tc.ts, tc.ok)
		}
	}
}

// TestAckMetaMatchesMetadata: on messages a real server delivers, ackMeta
// reads what the client's Metadata does.
func TestAckMetaMatchesMetadata(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: DefaultLogsStream,
		Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	e.publish(0, 20, []string{"logs.meta.a", "logs.meta.b"}, "")
	cons, err := e.js.CreateOrUpdateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{Durable: "meta", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := cons.Fetch(20, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range mb.Messages() {
		n++
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		stream, seq, ts, ok := ackMeta(m.Reply())
		if !ok || stream != meta.Stream || seq != meta.Sequence.Stream || ts != meta.Timestamp.UnixNano() {
			t.Fatalf("ackMeta(%q) = %q, %d, %d, %v; Metadata: %q, %d, %d", m.Reply(), stream, seq, ts, ok,
				meta.Stream, meta.Sequence.Stream, meta.Timestamp.UnixNano())
		}
	}
	if n != 20 {
		t.Fatalf("fetched %d of 20", n)
	}
}

// stubMsg is a delivered message as prepare reads it.
type stubMsg struct {
	jetstream.Msg
	subject, reply string
	data           []byte
}

func (m stubMsg) Subject() string { return m.subject }
func (m stubMsg) Reply() string   { return m.reply }
func (m stubMsg) Data() []byte    { return m.data }

// TestPrepareAllocates: preparing a JSON event allocates nothing per
// message (its metadata read from the ack subject in place, the record not
// moved to the heap to be sized): the export's rate is bound by the CPU it
// spends per message, garbage collection included.
func TestPrepareAllocates(t *testing.T) {
	var delivered atomic.Int64
	r := &runner{w: &Worker{cfg: Config{LogsStream: DefaultLogsStream, Now: time.Now}}, sink: noopSink{&delivered},
		mIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "in"})}
	r.dd = &dedupe{r: r, off: true}
	msg := &stubMsg{subject: "logs.meta.app", reply: "$JS.ACK._.HASH.LOGS.exp.1.42.7.1764650000123456789.9.tok",
		data: []byte(`{"level":"info","time":"2026-12-02T14:30:00.123456Z","msg":"event","id":12345,"pad":"ppp"}`)}
	p := r.prepare(msg)
	if p.rec.Seq != 42 || p.rec.Stream != "LOGS" || p.rec.Received.UnixNano() != 1764650000123456789 || p.size != len(msg.data)+26 || p.rec.Level != "info" {
		t.Fatalf("prepared %+v", p)
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.prepare(msg) }); n != 0 {
		t.Fatalf("prepare allocates %.1f times per message, want 0", n)
	}
}
