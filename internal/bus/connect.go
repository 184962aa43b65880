package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Connect backoff: from connectMin, doubling, to connectMax, with jitter.
const (
	connectMin = 100 * time.Millisecond
	connectMax = 5 * time.Second
)

// connectLogBurst failures are logged at once; after them, one a
// connectLogPeriod (with the number of attempts so far).
const (
	connectLogBurst  = 3
	connectLogPeriod = 10 * time.Second
)

// Connect connects to NATS at url, retrying with backoff while the server is
// not there (connection refused, a timeout, no servers available) until it
// is or ctx is done; each failure is logged, rate-limited. An error retrying
// cannot cure (authorization refused, a TLS certificate that does not
// verify) is returned at once.
func Connect(ctx context.Context, log zerolog.Logger, url string, opts ...nats.Option) (*nats.Conn, error) {
	sampled := log.Sample(&zerolog.BurstSampler{Burst: connectLogBurst, Period: connectLogPeriod})
	wait := connectMin
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempt", attempt).Msg("connecting to NATS: done")
			}
			return nc, nil
		}
		if permanentConnect(err) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("gave up when stopped: %w", err)
		}
		sampled.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("connecting to NATS: failed, retrying")
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("gave up when stopped: %w", err)
		case <-time.After(wait + rand.N(wait/4+1)):
		}
		wait = min(2*wait, connectMax)
	}
}

// permanentConnect reports whether a connect error is one retrying cannot
// cure: the server refused the credentials, or TLS cannot be agreed.
func permanentConnect(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAccountAuthExpired) || errors.Is(err, nats.ErrPermissionViolation) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) {
		return true
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &record) ||
		errors.As(err, &alert) || errors.As(err, &verify) {
		return true
	}
	// The server's refusal can come as text only ("-ERR 'Authorization
	// Violation'", a TLS alert).
	text := strings.ToLower(err.Error())
	return strings.Contains(text, "authorization violation") || strings.Contains(text, "tls: ")
}
