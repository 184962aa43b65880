package export

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"google.golang.org/api/option"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/logevent"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudlogging"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
)

// Sink delivers batches of log records of one export block to a cloud.
// internal/cloudwatch and internal/cloudlogging implement it.
type Sink interface {
	// Limits are the per-call limits; the worker never hands Write a batch
	// beyond them, so one batch of one log stream is one call.
	Limits() logevent.Limits
	// Size is what a record counts against Limits().MaxBytes.
	Size(r *logevent.Record) int
	// Write sends the records whose outcome is Pending and sets each outcome.
	// On error the records not carried by a successful call stay Pending; the
	// error wraps an events sentinel (throttled, unavailable, ...).
	Write(ctx context.Context, recs []logevent.Record, out []logevent.Outcome) error
	// Close releases the sink's client.
	Close() error
}

// SinkFactory builds the sink of an export block from its connection.
type SinkFactory func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error)

// NewSinkFactory returns the factory used by serve: awsConfig turns an aws
// connection into an SDK config (internal/aws), gcpOptions turns a gcp
// connection into client options (internal/gcp).
func NewSinkFactory(awsConfig func(context.Context, events.Connection) (aws.Config, error),
	gcpOptions func(context.Context, events.Connection) ([]option.ClientOption, error)) SinkFactory {
	return func(ctx context.Context, exp events.Export, conn events.Connection) (Sink, error) {
		switch {
		case exp.CloudWatch != nil:
			if conn.Provider != events.ProviderAWS || awsConfig == nil {
				return nil, events.Errorf(events.CodeBadRequest, "export %s: connection %s is not an aws connection", exp.Name, conn.Name)
			}
			cfg, err := awsConfig(ctx, conn)
			if err != nil {
				return nil, fmt.Errorf("building aws config for export %s: %w", exp.Name, err)
			}
			return cloudwatch.New(cloudwatch.NewClient(cfg, conn), exp, nopLogger), nil
		case exp.CloudLogging != nil:
			if conn.Provider != events.ProviderGCP || gcpOptions == nil {
				return nil, events.Errorf(events.CodeBadRequest, "export %s: connection %s is not a gcp connection", exp.Name, conn.Name)
			}
			opts, err := gcpOptions(ctx, conn)
			if err != nil {
				return nil, fmt.Errorf("building gcp options for export %s: %w", exp.Name, err)
			}
			client, err := cloudlogging.NewClient(ctx, conn, opts...)
			if err != nil {
				return nil, fmt.Errorf("creating cloud logging client for export %s: %w", exp.Name, err)
			}
			return cloudlogging.New(client, exp), nil
		}
		return nil, events.Errorf(events.CodeBadRequest, "export %s: no sink", exp.Name)
	}
}
