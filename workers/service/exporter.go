package service

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/config"
)

// exporter is what the service needs of the log export worker.
type exporter interface {
	Apply(exports []events.Export, conns map[string]events.Connection)
	Stop(ctx context.Context) error
}

type noExporter struct{}

func (noExporter) Apply([]events.Export, map[string]events.Connection) {}
func (noExporter) Stop(context.Context) error                          { return nil }

func newExporter(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, subjects events.Subjects, cfg config.Serve, log zerolog.Logger) (exporter, error) {
	return noExporter{}, nil
}
