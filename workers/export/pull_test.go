package export

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPullMatchesClientFetch: on a real server, the collector's pull
// requests bring what the client's Fetch does (the messages in order, with
// the same metadata, data and headers), end as its do (the count reached,
// no messages, max_wait), and their acks settle the messages.
func TestPullMatchesClientFetch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: DefaultLogsStream,
		Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	e.publish(0, 30, []string{"logs.pull.a", "logs.pull.b"}, "")
	mine, err := e.js.CreateOrUpdateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{Durable: "pull", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := e.js.CreateOrUpdateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{Durable: "client", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	p := newPuller(e.js, mine)
	var got []jetstream.Msg
	// No wait: 20 of the 30 at once, the count ending the request.
	b, err := p.fetch(20, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.drain(func(m jetstream.Msg) { got = append(got, m) })
	if len(got) != 20 || b.Error() != nil {
		t.Fatalf("no-wait pull of 20: %d messages, error %v", len(got), b.Error())
	}
	// With a wait: the other 10, the server's 408 at max_wait ending it.
	start := time.Now()
	b, err = p.fetch(50, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	b.drain(func(m jetstream.Msg) { got = append(got, m) })
	if len(got) != 30 || b.Error() != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("pull of 50 waiting 300ms: %d messages in all, error %v, after %v", len(got), b.Error(), time.Since(start))
	}
	// Nothing left: the 404 ends a no-wait pull at once.
	b, err = p.fetch(5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := b.next(nil); m != nil || b.Error() != nil {
		t.Fatalf("no-wait pull of nothing: %v, error %v", m, b.Error())
	}

	mb, err := theirs.Fetch(30, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for want := range mb.Messages() {
		m := got[i]
		i++
		mm, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		wm, err := want.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		mm.Consumer, wm.Consumer = "", "" // the two consumers' names
		if !reflect.DeepEqual(mm, wm) || m.Subject() != want.Subject() || string(m.Data()) != string(want.Data()) ||
			!reflect.DeepEqual(m.Headers(), want.Headers()) {
			t.Fatalf("message %d: pulled %+v %q %q, the client's Fetch %+v %q %q", i, mm, m.Subject(), m.Data(), wm, want.Subject(), want.Data())
		}
	}
	if i != 30 {
		t.Fatalf("the client's Fetch brought %d of 30", i)
	}

	// Acks: settled once (a second ack, or InProgress after it, is refused
	// as the client's are), and the server counts them.
	for i, m := range got {
		if i%2 == 0 {
			if err := m.InProgress(); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := got[0].Ack(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		t.Fatalf("second ack: %v, want ErrMsgAlreadyAckd", err)
	}
	if err := got[0].InProgress(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		t.Fatalf("InProgress after the ack: %v, want ErrMsgAlreadyAckd", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := mine.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.AckFloor.Stream == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 acks: %d ack pending, ack floor %d", info.NumAckPending, info.AckFloor.Stream)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPullNakDelay: a nak with a delay comes back after it, one without at
// once, and a deleted consumer ends a waiting pull with ErrConsumerDeleted
// (what makes the collector create it again).
func TestPullNakDelay(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: DefaultLogsStream,
		Subjects: DefaultLogsSubjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	e.publish(0, 2, []string{"logs.pull.a"}, "")
	cons, err := e.js.CreateOrUpdateConsumer(ctx, DefaultLogsStream, jetstream.ConsumerConfig{Durable: "nak", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	p := newPuller(e.js, cons)
	pull := func(n int, wait time.Duration) []jetstream.Msg {
		t.Helper()
		b, err := p.fetch(n, wait)
		if err != nil {
			t.Fatal(err)
		}
		var ms []jetstream.Msg
		b.drain(func(m jetstream.Msg) { ms = append(ms, m) })
		return ms
	}
	ms := pull(2, time.Second)
	if len(ms) != 2 {
		t.Fatalf("pulled %d of 2", len(ms))
	}
	sent := time.Now()
	if err := ms[0].NakWithDelay(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ms[1].Nak(); err != nil {
		t.Fatal(err)
	}
	if again := pull(2, 500*time.Millisecond); len(again) != 1 || string(again[0].Data()) != string(ms[1].Data()) {
		t.Fatalf("within the delay: %d messages back, want the one nak'ed without a delay", len(again))
	}
	again := pull(1, 3*time.Second)
	if len(again) != 1 || string(again[0].Data()) != string(ms[0].Data()) || time.Since(sent) < time.Second {
		t.Fatalf("after the delay: %d messages back after %v, want the delayed one after 1s", len(again), time.Since(sent))
	}
	if md, _ := again[0].Metadata(); md.NumDelivered != 2 {
		t.Fatalf("redelivered with NumDelivered %d, want 2", md.NumDelivered)
	}

	b, err := p.fetch(5, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The pull request must wait at the consumer when it is deleted (one
	// that reached the server after would get no answer at all).
	natstest.Eventually(t, 10*time.Second, "the pull request waiting at the consumer", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumWaiting > 0
	})
	if err := e.js.DeleteConsumer(ctx, DefaultLogsStream, "nak"); err != nil {
		t.Fatal(err)
	}
	if m, _ := b.next(nil); m != nil || !errors.Is(b.Error(), jetstream.ErrConsumerDeleted) {
		t.Fatalf("pull when the consumer is deleted: %v, error %v, want ErrConsumerDeleted", m, b.Error())
	}
}

// TestPullStatus: the statuses a pull request ends with, read as the
// client's Fetch reads them.
func TestPullStatus(t *testing.T) {
	status := func(code, descr string) *nats.Msg {
		m := nats.NewMsg("_INBOX.x")
		m.Header.Set("Status", code)
		if descr != "" {
			m.Header.Set("Description", descr)
		}
		return m
	}
	for _, tc := range []struct {
		m    *nats.Msg
		user bool
		err  error
	}{
		{&nats.Msg{Data: []byte("x")}, true, nil},
		{&nats.Msg{}, true, nil},
		{status("100", "Idle Heartbeat"), false, nil},
		{status("404", "No Messages"), false, jetstream.ErrNoMessages},
		{status("408", "Request Timeout"), false, nats.ErrTimeout},
		{status("409", "Consumer Deleted"), false, jetstream.ErrConsumerDeleted},
		{status("409", "Leadership Change"), false, jetstream.ErrConsumerLeadershipChanged},
		{status("409", "Message Size Exceeds MaxBytes"), false, jetstream.ErrMaxBytesExceeded},
		{status("409", "Batch Completed"), false, jetstream.ErrBatchCompleted},
		{status("409", "Server Shutdown"), false, jetstream.ErrServerShutdown},
		{status("400", "Bad Request"), false, jetstream.ErrBadRequest},
		{status("503", ""), false, nats.ErrNoResponders},
	} {
		user, err := pullStatus(tc.m)
		if user != tc.user || !errors.Is(err, tc.err) {
			t.Errorf("%v: user %v, %v; want %v, %v", tc.m.Header, user, err, tc.user, tc.err)
		}
	}
	if _, err := pullStatus(status("409", "Exceeded MaxWaiting")); err == nil || err.Error() != "nats: Exceeded MaxWaiting" {
		t.Errorf("409 Exceeded MaxWaiting: %v", err)
	}
	// A heartbeat does not end the request; a 408 ends it without an error,
	// a 409 with its error.
	b := &pullBatch{sub: &nats.Subscription{}, want: 5}
	if m := b.take(status("100", "Idle Heartbeat")); m != nil || b.done {
		t.Fatalf("heartbeat: %v, done %v", m, b.done)
	}
	if m := b.take(status("408", "Request Timeout")); m != nil || !b.done || b.err != nil {
		t.Fatalf("408: %v, done %v, %v", m, b.done, b.err)
	}
	b = &pullBatch{sub: &nats.Subscription{}, want: 5}
	if m := b.take(status("409", "Leadership Change")); m != nil || !b.done || !errors.Is(b.err, jetstream.ErrConsumerLeadershipChanged) {
		t.Fatalf("409: %v, done %v, %v", m, b.done, b.err)
	}
}
