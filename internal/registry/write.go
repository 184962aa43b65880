package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// update writes val under key in b with compare-and-set on rev (0: the key
// holds nothing), as KeyValue.Update does: one request, the same header and
// the same errors (a conflict matches ErrKeyExists, isWrongSequence and
// ErrKeyRevisionMismatch), its ack read without a JSON decoder in the
// normal case. An admin put is one such write; nats.go's Update costs an
// options slice, a header map set through Header.Set, a retry loop and a
// JSON decode of the ack per write.
func (r *Registry) update(ctx context.Context, b *bucket, key string, val []byte, rev uint64) (uint64, error) {
	if !validKey(key) {
		return 0, jetstream.ErrInvalidKey
	}
	m := &nats.Msg{Subject: kvSubject(b, key), Data: val, Header: nats.Header{
		jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(rev, 10)},
	}}
	if _, ok := ctx.Deadline(); !ok {
		// As jetstream's publish: a request without a deadline gets the
		// JetStream context's default one.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.js.Options().DefaultTimeout)
		defer cancel()
	}
	resp, err := r.js.Conn().RequestMsgWithContext(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		// No stream answered (a leader election): KeyValue retries.
		return b.kv.Update(ctx, key, val, rev)
	}
	if err != nil {
		return 0, err
	}
	return readAck(resp.Data, "KV_"+b.name)
}

// readAck reads a JetStream publish ack of stream: the sequence stored, or
// the error the stream answered, as jetstream.PublishMsg and KeyValue.Update
// return them.
func readAck(data []byte, stream string) (uint64, error) {
	if seq, ok := quickAck(data, stream); ok {
		return seq, nil
	}
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
	}
	if json.Unmarshal(data, &ack) != nil {
		return 0, jetstream.ErrInvalidJSAck
	}
	if ack.Error != nil {
		err := fmt.Errorf("nats: %w", ack.Error)
		if ack.Error.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			ack.Error.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant {
			err = fmt.Errorf("%w: %w", err, jetstream.ErrKeyRevisionMismatch)
		}
		return 0, err
	}
	if ack.Stream == "" {
		return 0, jetstream.ErrInvalidJSAck
	}
	return ack.Seq, nil
}

// quickAck reads the ack a stream sends for a stored message,
// {"stream":"<stream>","seq":<n>} exactly; ok is false for anything else
// (an error, a domain, a duplicate), which readAck decodes.
func quickAck(data []byte, stream string) (uint64, bool) {
	rest, ok := bytes.CutPrefix(data, []byte(`{"stream":"`))
	if !ok {
		return 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(stream)); !ok {
		return 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`","seq":`)); !ok {
		return 0, false
	}
	digits, ok := bytes.CutSuffix(rest, []byte("}"))
	if !ok || len(digits) == 0 || len(digits) > 20 {
		return 0, false
	}
	var seq uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if seq > (^uint64(0)-d)/10 {
			return 0, false
		}
		seq = seq*10 + d
	}
	return seq, seq > 0
}

// encodeRecord is json.Marshal(rec), byte for byte, written directly: the
// record of every sealed write. public is json.Marshal's output already
// (compact, HTML-escaped), which json.Marshal would copy as it is.
func encodeRecord(rec sealedRecord) ([]byte, error) {
	kid := rec.Sealed.KeyID
	if !plainToken(kid) {
		return json.Marshal(rec)
	}
	enc := base64.StdEncoding
	// The fixed text and the numbers take up to 117 bytes: a smaller
	// estimate makes the base64 appends grow (copy) the record.
	n := 128 + len(rec.Public) + len(kid) + enc.EncodedLen(len(rec.Sealed.Nonce)) + enc.EncodedLen(len(rec.Sealed.Data))
	b := make([]byte, 0, n)
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(rec.V), 10)
	if rec.Gen != 0 {
		b = append(b, `,"gen":`...)
		b = strconv.AppendUint(b, rec.Gen, 10)
	}
	if len(rec.Public) > 0 {
		b = append(b, `,"public":`...)
		b = append(b, rec.Public...)
	}
	if rec.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, rec.Version, 10)
	}
	b = append(b, `,"sealed":{"kid":"`...)
	b = append(b, kid...)
	b = append(b, `","nonce":`...)
	b = appendBase64(b, rec.Sealed.Nonce)
	b = append(b, `,"data":`...)
	b = appendBase64(b, rec.Sealed.Data)
	b = append(b, "}}"...)
	return b, nil
}

// appendBase64 appends v as json.Marshal writes a []byte: quoted standard
// base64, null for nil.
func appendBase64(b, v []byte) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// plainToken reports whether s is written by json.Marshal as it is, between
// quotes: letters, digits and -_.:/ only.
func plainToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}
