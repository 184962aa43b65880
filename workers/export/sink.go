package export

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"google.golang.org/api/option"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/sink"
	"github.com/cloudbridge/cloudbridge/internal/sink/all"
)

// Sink is what the runner delivers through (internal/sink).
type Sink = sink.Sink

// SinkFactory builds the sink of an export block from its connection.
type SinkFactory func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error)

// NewSinkFactory returns the factory used by serve: the kind registered for
// the export's block (internal/sink/all) builds its sink; awsConfig turns an
// aws connection into an SDK config, gcpOptions a gcp connection into client
// options.
func NewSinkFactory(awsConfig func(context.Context, events.Connection) (aws.Config, error),
	gcpOptions func(context.Context, events.Connection) ([]option.ClientOption, error)) SinkFactory {
	clients := sink.Clients{AWS: awsConfig, GCP: gcpOptions}
	return func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error) {
		return all.Open(ctx, exp, conn, clients)
	}
}
