package events

import (
	"bytes"
	"encoding/json"
)

// Marshal encodes v as compact JSON without HTML escaping, so subjects such
// as logs.app.> stay readable ("logs.app.>", not "logs.app.\u003e"). Use it
// for everything put on the wire or in a KV bucket.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
