package service

import (
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
)

// providerFactories returns the factory of every provider of the table
// (internal/provider/all), built with the worker's logger and built-in store,
// with the factories given by WithProvider in their place.
func providerFactories(log zerolog.Logger, store provider.SecretStore, overrides map[string]provider.Factory) map[string]provider.Factory {
	out := all.Table.Factories(provider.Env{Log: log, Secrets: store})
	for name, f := range overrides {
		out[name] = f
	}
	return out
}
