package events

import (
	"bytes"
	"encoding/json"
	"sync"
)

// encoder is a JSON encoder with its buffer, reused across Marshal calls.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// encoders are the reusable encoders of Marshal: a new bytes.Buffer and
// json.Encoder per call cost two allocations and the buffer's growth (its
// first write sizes it for the value, a larger one copies it), on every
// reply and stored record.
var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// maxPooledEncoder bounds the buffer an encoder keeps for reuse: one that
// encoded a large value (a long list) is let go.
const maxPooledEncoder = 64 << 10

// Marshal encodes v as compact JSON without HTML escaping, so subjects such
// as logs.app.> stay readable ("logs.app.>", not "logs.app.\u003e"). Use it
// for everything put on the wire or in a KV bucket. The result is a copy of
// its own, exactly the size of the encoding.
func Marshal(v any) ([]byte, error) {
	e := encoders.Get().(*encoder)
	e.buf.Reset()
	err := e.enc.Encode(v)
	var out []byte
	if err == nil {
		out = bytes.Clone(bytes.TrimSuffix(e.buf.Bytes(), []byte("\n")))
	}
	if e.buf.Cap() <= maxPooledEncoder {
		encoders.Put(e)
	}
	return out, err
}
