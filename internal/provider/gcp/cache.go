package gcp

import (
	"context"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
)

// fetchTimeout bounds one shared token fetch, whoever started it.
const fetchTimeout = 30 * time.Second

// minUsable is the remaining lifetime below which a cached token is not used
// even when a refresh fails.
const minUsable = 10 * time.Second

// tokenCache is a connection's token cache. A token is refreshed when it is
// within early of its expiry; concurrent requests share one fetch
// (singleflight), each waiting no longer than its own context allows. If the
// refresh fails while the cached token is still valid, the cached token is
// used and the failure logged, so a token endpoint outage during the early
// window costs nothing.
type tokenCache struct {
	src   auth.TokenProvider
	early time.Duration
	log   zerolog.Logger

	mu  sync.Mutex
	tok *auth.Token
	sf  singleflight.Group
}

func newTokenCache(src auth.TokenProvider, early time.Duration, log zerolog.Logger) *tokenCache {
	return &tokenCache{src: src, early: early, log: log}
}

func (c *tokenCache) current() *auth.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok
}

func (c *tokenCache) fresh(t *auth.Token) bool {
	return t != nil && t.Value != "" && (t.Expiry.IsZero() || time.Until(t.Expiry) > c.early)
}

func usable(t *auth.Token) bool {
	return t != nil && t.Value != "" && (t.Expiry.IsZero() || time.Until(t.Expiry) > minUsable)
}

// Token implements auth.TokenProvider.
func (c *tokenCache) Token(ctx context.Context) (*auth.Token, error) {
	old := c.current()
	if c.fresh(old) {
		return old, nil
	}
	ch := c.sf.DoChan("token", func() (any, error) {
		if t := c.current(); c.fresh(t) {
			return t, nil // refreshed by a flight that ended just before this one
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		t, err := c.src.Token(fctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.tok = t
		c.mu.Unlock()
		return t, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			if usable(old) {
				c.log.Warn().Err(classifyTokenError(r.Err)).Msg("token refresh failed; using the cached token until it expires")
				return old, nil
			}
			return nil, r.Err
		}
		return r.Val.(*auth.Token), nil
	case <-ctx.Done():
		if usable(old) {
			return old, nil
		}
		return nil, ctx.Err()
	}
}

// cached wraps credentials so their tokens come from a tokenCache, keeping
// the credentials' project, quota project and universe domain.
func (p *Provider) cached(inner *auth.Credentials) *auth.Credentials {
	return auth.NewCredentials(&auth.CredentialsOptions{
		TokenProvider:          newTokenCache(inner.TokenProvider, p.set.earlyRefresh, p.log),
		JSON:                   inner.JSON(),
		ProjectIDProvider:      auth.CredentialsPropertyFunc(inner.ProjectID),
		QuotaProjectIDProvider: auth.CredentialsPropertyFunc(inner.QuotaProjectID),
		UniverseDomainProvider: auth.CredentialsPropertyFunc(inner.UniverseDomain),
	})
}
