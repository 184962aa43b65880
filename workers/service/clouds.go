package service

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
	awsprov "github.com/cloudbridge/cloudbridge/internal/provider/aws"
	"github.com/cloudbridge/cloudbridge/internal/provider/gcp"
)

// cloudFactories returns the factories of the cloud providers.
func cloudFactories(log zerolog.Logger) map[string]provider.Factory {
	return map[string]provider.Factory{
		events.ProviderAWS: awsprov.Factory(awsprov.WithLogger(log)),
		events.ProviderGCP: func(ctx context.Context, c events.Connection) (provider.Resolver, error) {
			p, err := gcp.New(ctx, c, gcp.WithLogger(log))
			if err != nil {
				return nil, err
			}
			return p, nil
		},
	}
}
