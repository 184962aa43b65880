package service

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	awsprov "github.com/cloudbridge/cloudbridge/internal/aws"
	"github.com/cloudbridge/cloudbridge/internal/gcp"
	"github.com/cloudbridge/cloudbridge/internal/provider"
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
