package cloudwatch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// putLogEventsProtocol is the client's protocol (awsJson 1.1) with the body
// of PutLogEvents written in one pass into a buffer sized up front. The SDK's
// serializer grows its buffer from 1 KiB by doubling and then copies it out:
// for a 1 MiB call that is about 3 MiB of copying and the largest part of the
// sink's CPU per event (BenchmarkExportCloudWatch's profile). Everything but
// the events (the operation's headers, the other members, the answer) is the
// SDK's own: the input without its events is serialized by the wrapped
// protocol and the events are appended to that object.
type putLogEventsProtocol struct {
	smithyhttp.ClientProtocol
}

// SerializeRequest implements smithyhttp.ClientProtocol.
func (p putLogEventsProtocol) SerializeRequest(ctx context.Context, schema *smithy.OperationSchema, in smithy.Serializable, req *smithyhttp.Request) error {
	pin, ok := in.(*cloudwatchlogs.PutLogEventsInput)
	if !ok || pin.LogEvents == nil {
		return p.ClientProtocol.SerializeRequest(ctx, schema, in, req)
	}
	rest := *pin
	rest.LogEvents = nil
	if err := p.ClientProtocol.SerializeRequest(ctx, schema, &rest, req); err != nil {
		return err
	}
	var head []byte
	if s := req.GetStream(); s != nil {
		var err error
		if head, err = io.ReadAll(s); err != nil {
			return fmt.Errorf("reading the serialized request: %w", err)
		}
	}
	head = bytes.TrimSpace(head)
	if len(head) < 2 || head[0] != '{' || head[len(head)-1] != '}' {
		return fmt.Errorf("serialized PutLogEvents request is not a JSON object")
	}
	sreq, err := req.SetStream(bytes.NewReader(appendLogEvents(head, pin)))
	if err != nil {
		return fmt.Errorf("set stream: %w", err)
	}
	*req = *sreq
	return nil
}

// appendLogEvents is the JSON object head (the input's other members) with
// the member "logEvents" added.
func appendLogEvents(head []byte, in *cloudwatchlogs.PutLogEventsInput) []byte {
	size := len(head) + len(`,"logEvents":[]`)
	for _, e := range in.LogEvents {
		if e.Message != nil {
			// Quotes and backslashes in a message are escaped: room for some.
			size += len(*e.Message) + len(*e.Message)/8
		}
		size += len(`{"message":"","timestamp":-9223372036854775808},`)
	}
	body := make([]byte, 0, size)
	body = append(body, head[:len(head)-1]...)
	if len(head) > 2 {
		body = append(body, ',')
	}
	body = append(body, `"logEvents":[`...)
	for i, e := range in.LogEvents {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, '{')
		if e.Message != nil {
			body = append(body, `"message":`...)
			body = appendString(body, *e.Message)
		}
		if e.Timestamp != nil {
			if e.Message != nil {
				body = append(body, ',')
			}
			body = append(body, `"timestamp":`...)
			body = strconv.AppendInt(body, *e.Timestamp, 10)
		}
		body = append(body, '}')
	}
	return append(body, "]}"...)
}

// safe marks the ASCII bytes that stand for themselves in a JSON string.
var safe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD (as the SDK's
// serializer and encoding/json do), runs of safe bytes copied at once.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
