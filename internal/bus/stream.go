package bus

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream of cfg when it is missing and updates it
// only when a field cfg sets differs from the stored configuration. Workers
// starting together call it at once: updating an unchanged stream while
// another worker creates a consumer on it is needless work for the server
// (and a data race inside nats-server 2.15's file store).
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another worker created it in between.
			return EnsureStream(ctx, js, cfg)
		}
		return s, err
	}
	if err != nil {
		return nil, err
	}
	if streamMatches(s.CachedInfo().Config, cfg) {
		return s, nil
	}
	return js.UpdateStream(ctx, cfg)
}

// streamMatches reports whether have already carries every field want sets.
func streamMatches(have, want jetstream.StreamConfig) bool {
	switch {
	case want.Description != "" && have.Description != want.Description,
		len(want.Subjects) > 0 && !slices.Equal(have.Subjects, want.Subjects),
		have.Storage != want.Storage,
		have.Retention != want.Retention,
		want.MaxAge != 0 && have.MaxAge != want.MaxAge,
		want.MaxBytes != 0 && have.MaxBytes != want.MaxBytes,
		want.Duplicates != 0 && have.Duplicates != want.Duplicates,
		want.Replicas > 1 && have.Replicas != want.Replicas:
		return false
	}
	return true
}

// APIPrefix is the JetStream API prefix of o (its domain's, or a custom
// one), ending with a dot, as nats.go builds it: for the requests a worker
// sends itself (reads from a stream's leader, pull requests).
func APIPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "" && !strings.HasSuffix(o.APIPrefix, "."):
		return o.APIPrefix + "."
	case o.APIPrefix != "":
		return o.APIPrefix
	}
	return jetstream.DefaultAPIPrefix
}
