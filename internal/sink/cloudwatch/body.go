package cloudwatch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cloudbridge/cloudbridge/internal/jsonenc"
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
			body = jsonenc.AppendString(body, *e.Message)
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
