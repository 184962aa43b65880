package provider

import (
	"context"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/rotation"
)

// EventsKind is implemented by a Kind whose block can carry change events
// (aws.events, gcp.events): a worker consumes them for each such connection
// and invalidates the secrets they name.
type EventsKind interface {
	// Events reports whether c consumes change events, and the cache TTL
	// of its secrets while its consumer cannot receive (degraded_ttl).
	Events(c *events.Connection) (degradedTTL time.Duration, ok bool)
}

// EventSourcer is implemented by providers that can read their connection's
// change events, with the connection's own credentials and endpoints.
type EventSourcer interface {
	// RotationSource returns the connection's change-event source; it makes
	// no call. An error means the connection has no usable events block.
	RotationSource(ctx context.Context) (rotation.Source, error)
}
