// Package bus is cloudbridge's NATS runtime: the connection options (auth,
// TLS, reconnect forever with backoff, state changes logged), the embedded
// nats-server used when no URL is configured, and the JetStream handle.
package bus

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Auth is how to authenticate and secure the NATS connection.
type Auth struct {
	User     string
	Password string
	Token    string
	NKeySeed string // path of an nkey seed file
	Creds    string // path of a .creds file
	TLSCA    string
	TLSCert  string
	TLSKey   string
}

// Validate checks that the auth options are consistent and their files exist.
func (a Auth) Validate() error {
	methods := 0
	for _, set := range []bool{a.User != "", a.Token != "", a.NKeySeed != "", a.Creds != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return errors.New("--nats-user, --nats-token, --nats-nkey and --nats-creds are alternatives: give one")
	}
	if a.Password != "" && a.User == "" {
		return errors.New("--nats-password needs --nats-user")
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	for flag, path := range map[string]string{"--nats-nkey": a.NKeySeed, "--nats-creds": a.Creds,
		"--nats-tls-ca": a.TLSCA, "--nats-tls-cert": a.TLSCert, "--nats-tls-key": a.TLSKey} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	return nil
}

// Options returns the nats.go options for auth.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	case a.NKeySeed != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("reading --nats-nkey: %w", err)
		}
		opts = append(opts, o)
	case a.Creds != "":
		opts = append(opts, nats.UserCredentials(a.Creds))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}

// Resilient returns options that reconnect forever with capped, jittered
// exponential backoff and log every connection state change.
func Resilient(name string, log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := 250 * time.Millisecond << min(attempts, 7)
			d = min(d, 30*time.Second)
			return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", RedactURL(nc.ConnectedUrl())).Msg("nats connected")
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil || nc.IsClosed() || nc.IsDraining() {
				// Our own Close or Drain (a clean shutdown): not a fault.
				log.Info().Msg("nats disconnected (closing)")
				return
			}
			log.Warn().Err(err).Msg("nats disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", RedactURL(nc.ConnectedUrl())).Msg("nats reconnected")
		}),
		nats.ClosedHandler(func(nc *nats.Conn) { log.Info().Msg("nats connection closed") }),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
}
