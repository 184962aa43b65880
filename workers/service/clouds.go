package service

import (
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	awsprov "github.com/cloudbridge/cloudbridge/internal/aws"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// cloudFactories returns the factories of the cloud providers.
func cloudFactories(log zerolog.Logger) map[string]provider.Factory {
	return map[string]provider.Factory{
		events.ProviderAWS: awsprov.Factory(awsprov.WithLogger(log)),
	}
}
