package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/internal/bus"
)

// A secret put's check (keptFor) must read what a quorum of the bucket's
// replicas has acknowledged: a delete of its connection acked before the
// check is to be seen. nats.go sends the reads of a KV stream (which allows
// direct gets) as direct gets, which any replica answers, a follower behind
// the leader included; those of the check go to the stream's leader instead
// ($JS.API.STREAM.MSG.GET.<stream>) when the stream has more than one
// replica (or allows no direct get). A single replica is its own leader: its
// direct get is as fresh, and cheaper.

// msgGet is a request for one stored message (the JetStream API's).
type msgGet struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// msgGetReply is the reply of $JS.API.STREAM.MSG.GET.<stream>.
type msgGetReply struct {
	Type    string `json:"type"`
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Hdrs    []byte    `json:"hdrs,omitempty"`
		Data    []byte    `json:"data,omitempty"`
		Time    time.Time `json:"time"`
	} `json:"message,omitempty"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     uint16 `json:"err_code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
}

// errCodeMsgNotFound is JetStream's error code of a message not found.
const errCodeMsgNotFound = 10037

// msgGetSubject is the subject of a read of stream's messages: its leader's
// (leader) or a direct get, which any replica answers.
func msgGetSubject(prefix, stream string, leader bool) string {
	if leader {
		return prefix + "STREAM.MSG.GET." + stream
	}
	return prefix + "DIRECT.GET." + stream
}

// decodeMsgGet decodes the leader's reply: jetstream.ErrMsgNotFound when it
// holds no such message.
func decodeMsgGet(data []byte) (*jetstream.RawStreamMsg, error) {
	var rep msgGetReply
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("decoding a stream message get reply: %w", err)
	}
	switch {
	case rep.Error != nil && rep.Error.ErrCode == errCodeMsgNotFound:
		return nil, jetstream.ErrMsgNotFound
	case rep.Error != nil:
		return nil, fmt.Errorf("stream message get: %s (code %d, err_code %d)", rep.Error.Description, rep.Error.Code, rep.Error.ErrCode)
	case rep.Message == nil:
		return nil, jetstream.ErrInvalidJetStreamResponse
	}
	m := &jetstream.RawStreamMsg{Subject: rep.Message.Subject, Sequence: rep.Message.Seq, Data: rep.Message.Data, Time: rep.Message.Time}
	if len(rep.Message.Hdrs) > 0 {
		h, err := nats.DecodeHeadersMsg(rep.Message.Hdrs)
		if err != nil {
			return nil, fmt.Errorf("decoding a stored message's headers: %w", err)
		}
		m.Header = h
	}
	return m, nil
}

// decodeDirectGet decodes a direct get's reply (the message, its metadata
// in headers; a status 404 when there is none).
func decodeDirectGet(r *nats.Msg) (*jetstream.RawStreamMsg, error) {
	if len(r.Data) == 0 {
		switch st := r.Header.Get("Status"); st {
		case "":
		case "404":
			return nil, jetstream.ErrMsgNotFound
		default:
			return nil, fmt.Errorf("direct get: status %s %s", st, r.Header.Get("Description"))
		}
	}
	seq, err := strconv.ParseUint(r.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("direct get: sequence header: %w", err)
	}
	return &jetstream.RawStreamMsg{Subject: r.Header.Get(jetstream.SubjectHeader), Sequence: seq, Header: r.Header, Data: r.Data}, nil
}

// checkedGet reads one message of b's stream for keptFor: from the
// stream's leader when it has more than one replica (see above).
func (r *Registry) checkedGet(ctx context.Context, b *bucket, req msgGet) (*jetstream.RawStreamMsg, error) {
	st, err := r.streamOf(ctx, b)
	if err != nil {
		return nil, err
	}
	leader := r.fault != nil && r.fault.LeaderReads
	if info := st.CachedInfo(); info != nil && (info.Config.Replicas > 1 || !info.Config.AllowDirect) {
		leader = true
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	reply, err := r.js.Conn().RequestWithContext(ctx, msgGetSubject(bus.APIPrefix(r.js.Options()), "KV_"+b.name, leader), body)
	if err != nil {
		return nil, err
	}
	if leader {
		return decodeMsgGet(reply.Data)
	}
	return decodeDirectGet(reply)
}

// checkedRead reads key of b as keptFor does (checkedGet): its value and
// revision, jetstream.ErrKeyNotFound when it holds none, and
// jetstream.ErrKeyDeleted when it holds a delete marker.
func (r *Registry) checkedRead(ctx context.Context, b *bucket, key string) (val []byte, rev uint64, err error) {
	m, err := r.checkedGet(ctx, b, msgGet{LastFor: kvSubject(b, key)})
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, 0, jetstream.ErrKeyNotFound
	case err != nil:
		return nil, 0, err
	}
	if op := m.Header.Get(kvOperation); op == kvPurge || op == kvDelete {
		return nil, m.Sequence, jetstream.ErrKeyDeleted
	}
	return m.Data, m.Sequence, nil
}
