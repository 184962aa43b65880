package registry

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/bus"
)

// The check's reads go to the JetStream API prefix the registry's client
// uses (its domain's, or a custom one), to the leader's subject or the
// direct get's.
func TestCheckedGetSubjects(t *testing.T) {
	for _, tc := range []struct {
		opts   jetstream.JetStreamOptions
		leader bool
		want   string
	}{
		{jetstream.JetStreamOptions{}, true, "$JS.API.STREAM.MSG.GET.KV_c"},
		{jetstream.JetStreamOptions{}, false, "$JS.API.DIRECT.GET.KV_c"},
		{jetstream.JetStreamOptions{Domain: "hub"}, true, "$JS.hub.API.STREAM.MSG.GET.KV_c"},
		{jetstream.JetStreamOptions{APIPrefix: "$JS.acc.API"}, true, "$JS.acc.API.STREAM.MSG.GET.KV_c"},
		{jetstream.JetStreamOptions{APIPrefix: "pre."}, false, "pre.DIRECT.GET.KV_c"},
	} {
		if got := msgGetSubject(bus.APIPrefix(tc.opts), "KV_c", tc.leader); got != tc.want {
			t.Errorf("%+v leader %v: %q, want %q", tc.opts, tc.leader, got, tc.want)
		}
	}
}

// The leader's reply is decoded: a message with its headers, a 404 as
// jetstream.ErrMsgNotFound, another error as an error, bad input refused.
func TestDecodeMsgGet(t *testing.T) {
	hdrs := base64.StdEncoding.EncodeToString([]byte("NATS/1.0\r\nKV-Operation: DEL\r\n\r\n"))
	data := base64.StdEncoding.EncodeToString([]byte("value"))
	m, err := decodeMsgGet([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"$KV.c.k","seq":42,"hdrs":"` +
		hdrs + `","data":"` + data + `","time":"2026-12-02T15:00:00Z"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "$KV.c.k" || m.Sequence != 42 || string(m.Data) != "value" || m.Header.Get(kvOperation) != kvDelete ||
		!m.Time.Equal(time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)) {
		t.Errorf("decoded %+v", m)
	}
	m, err = decodeMsgGet([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"$KV.c.k","seq":7,"time":"2026-12-02T15:00:00Z"}}`))
	if err != nil || m.Sequence != 7 || m.Header != nil || len(m.Data) != 0 {
		t.Errorf("no headers nor data: %+v %v", m, err)
	}
	if _, err := decodeMsgGet([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}`)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("404: %v", err)
	}
	for _, bad := range []string{
		`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":503,"err_code":10039,"description":"JetStream not enabled"}}`,
		`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response"}`,
		`{"message":{"seq":1,"hdrs":"bm90IGhlYWRlcnM="}}`,
		`{"message":{"seq":1,"data":"!!"}}`,
		`not json`,
	} {
		if m, err := decodeMsgGet([]byte(bad)); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("%s: %+v %v, want an error", bad, m, err)
		}
	}
}

// A direct get's reply is decoded too: its 404, another status, a message.
func TestDecodeDirectGet(t *testing.T) {
	m, err := decodeDirectGet(&nats.Msg{Header: nats.Header{"Nats-Sequence": {"9"}, "Nats-Subject": {"$KV.c.k"}}, Data: []byte("v")})
	if err != nil || m.Sequence != 9 || m.Subject != "$KV.c.k" || string(m.Data) != "v" {
		t.Errorf("message: %+v %v", m, err)
	}
	if _, err := decodeDirectGet(&nats.Msg{Header: nats.Header{"Status": {"404"}}}); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("404: %v", err)
	}
	for _, bad := range []*nats.Msg{{Header: nats.Header{"Status": {"408"}}}, {Header: nats.Header{"Nats-Sequence": {"x"}}, Data: []byte("v")}, {}} {
		if _, err := decodeDirectGet(bad); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("%+v: %v, want an error", bad, err)
		}
	}
}

// A watcher starting over lowers the revision seen to the bucket's last
// (a bucket deleted and created again starts its revisions over), never
// raises it.
func TestSeenAtMost(t *testing.T) {
	b := &bucket{}
	b.markSeen(10)
	b.seenAtMost(3)
	if got := b.lastSeen(); got != 3 {
		t.Errorf("seen %d after seenAtMost(3), want 3", got)
	}
	b.seenAtMost(5)
	if got := b.lastSeen(); got != 3 {
		t.Errorf("seenAtMost raised seen to %d", got)
	}
}
