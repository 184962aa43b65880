package resolve

import (
	"context"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func (w *Worker) handleToken(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.TokenRequest
	c, err := w.accept(ctx, events.OpToken, req, f, &in)
	if err != nil {
		return nil, err
	}
	b, err := w.provider(ctx, c)
	if err != nil {
		return nil, err
	}
	t, ok := b.raw.(provider.Tokener)
	if !ok {
		return nil, events.Errorf(events.CodeBadRequest, "connection %q (provider %s) does not vend cloud credentials", c.Name, c.Provider)
	}
	release, err := b.bulkhead.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return t.Token(ctx, in)
}

func (w *Worker) handleInvalidate(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.InvalidateRequest
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	f.Conn = in.Connection
	if in.Refresh {
		// A change event: re-read the secret ahead, if this worker has it.
		w.cfg.Cache.Refresh(in.Connection, in.Secret)
		return events.Empty{}, nil
	}
	w.cfg.Cache.Invalidate(in.Connection, in.Secret)
	return events.Empty{}, nil
}
