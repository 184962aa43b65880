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
	if err := c.Validate(); err != nil {
		return usageError{err}
	}
	log, err := logging.New(c.LogLevel, c.LogFormat, e.stderr)
	if err != nil {
		return usageError{err}
	}
	return service.Run(e.ctx, c.Serve, log)
}
