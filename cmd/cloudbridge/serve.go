package main

import (
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
	return service.Run(e.ctx, c.Serve, log)
}
