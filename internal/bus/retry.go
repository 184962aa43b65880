package bus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Start-up retry backoff: from retryMin, doubling, to retryMax, with jitter.
const (
	retryMin     = 100 * time.Millisecond
	retryMax     = 5 * time.Second
	attemptFirst = 2 * time.Second // first attempt's deadline, doubling to attemptLimit
	attemptLimit = 10 * time.Second
)

// jsClusterNoPeers is JetStream's "no suitable peers for placement"
// (JSClusterNoPeersErr, a 400): a cluster still forming has not seen its
// peers yet.
const jsClusterNoPeers jetstream.ErrorCode = 10005

// Permanent marks an error that retrying cannot cure (a configuration the
// server refuses): Retry returns it at once.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

// Retry runs fn until it succeeds, fails permanently, or ctx is done: each
// attempt under a deadline of its own, each failure logged with its cause,
// with exponential backoff between attempts. JetStream API errors other than
// server-side unavailability (a 5xx or 408) are permanent; anything else
// (timeouts, no responders, JetStream not enabled yet, a cluster still
// electing its leaders or without its peers yet, a connection down) is
// transient. A request to a cluster that is still forming can go unanswered,
// so the first attempt's deadline is short and grows to attemptLimit.
func Retry(ctx context.Context, log zerolog.Logger, what string, fn func(context.Context) error) error {
	wait, limit := retryMin, attemptFirst
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, limit)
		limit = min(2*limit, attemptLimit)
		err := fn(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempt", attempt).Msgf("%s: done", what)
			}
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return p.error
		}
		if !transient(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: gave up when stopped: %w", what, err)
		}
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msgf("%s: failed, retrying", what)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: gave up when stopped: %w", what, err)
		case <-time.After(wait + rand.N(wait/4+1)):
		}
		wait = min(2*wait, retryMax)
	}
}

func transient(err error) bool {
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.Code >= 500 || api.ErrorCode == jsClusterNoPeers || api.Code == 408 || api.Code == 0
	}
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	return true
}
