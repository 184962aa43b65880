package main

import (
	"errors"

	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/internal/logging"
	"github.com/cloudbridge/cloudbridge/workers/service"
)

type serveCmd struct {
	config.Serve `embed:""`
}

func (c *serveCmd) Run(e *env) error {
	// The global NATS flags (serve does not read NATS_URL). kong validated
	// serve before they were copied in, so validate again.
	c.NATS = e.f.NATS
	if err := c.Serve.Validate(); err != nil {
		return usageError{err}
	}
	log, err := logging.New(c.LogLevel, c.LogFormat, e.stderr)
	if err != nil {
		return usageError{err}
	}
	if err := applyMemoryLimit(c.MemoryLimit, log); err != nil {
		return usageError{err}
	}
	if err := startPprof(log); err != nil {
		return err
	}
	err = service.Run(e.ctx, c.Serve, log)
	if de := (*bus.DataDirError)(nil); errors.As(err, &de) {
		// An unusable --data-dir is a mistake in the configuration.
		return usageError{err}
	}
	return err
}
