package gcp

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"

	"github.com/cloudbridge/cloudbridge/events"
)

// maxScopedCaches bounds the token caches kept for non-default scope sets.
const maxScopedCaches = 32

// Token returns an access token of the connection's identity with the
// requested scopes (default cloud-platform, or the connection's
// tokens.scopes when cloud-platform is not among them), each within the
// connection's tokens.scopes (forbidden otherwise); tokens.max_duration caps
// an impersonated token's lifetime. duration applies to
// impersonation (generateAccessToken lifetime); keys and ADC get Google's
// one-hour tokens. Longer than one hour is a bad_request.
func (p *Provider) Token(ctx context.Context, req events.TokenRequest) (*events.TokenReply, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.Duration.D() > MaxTokenLifetime {
		return nil, events.Errorf(events.CodeBadRequest, "duration: at most 1h for a GCP access token")
	}
	scopes := slices.Clone(req.Scopes)
	if len(scopes) == 0 {
		scopes = []string{CloudPlatformScope}
		if p.tokens != nil && len(p.tokens.Scopes) > 0 && !slices.Contains(p.tokens.Scopes, CloudPlatformScope) {
			scopes = slices.Clone(p.tokens.Scopes)
		}
	}
	if p.tokens != nil {
		allowed := p.tokens.Scopes
		if len(allowed) == 0 {
			allowed = []string{CloudPlatformScope}
		}
		for _, s := range scopes {
			if !slices.Contains(allowed, s) {
				return nil, events.Errorf(events.CodeForbidden, "scope %q is outside the connection's tokens.scopes", events.Clip(s, 120))
			}
		}
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	lifetime := req.Duration.D()
	if capped := p.tokens.Cap(lifetime, MaxTokenLifetime); capped < MaxTokenLifetime && p.cfg.Auth == events.GCPAuthImpersonation {
		lifetime = capped
	}
	tp, err := p.tokenProvider(scopes, lifetime)
	if err != nil {
		return nil, err
	}
	tok, err := tp.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("getting an access token for %s: %w", p.Identity(), classifyTokenError(err))
	}
	return &events.TokenReply{Provider: events.ProviderGCP, GCP: &events.GCPToken{
		AccessToken: tok.Value, TokenType: "Bearer", Expiry: tok.Expiry.UTC(),
	}}, nil
}

// tokenProvider is the token cache for a scope set and lifetime: the
// connection's own for cloud-platform, else one kept per scope set.
func (p *Provider) tokenProvider(scopes []string, lifetime time.Duration) (auth.TokenProvider, error) {
	if lifetime == 0 && len(scopes) == 1 && scopes[0] == CloudPlatformScope {
		return p.creds.TokenProvider, nil
	}
	if p.cfg.Auth != events.GCPAuthImpersonation {
		lifetime = 0 // Google's token endpoint issues one-hour tokens only
	}
	key := strings.Join(scopes, " ") + "|" + lifetime.String()
	p.mu.Lock()
	tp, ok := p.scoped[key]
	p.mu.Unlock()
	if ok {
		return tp, nil
	}
	tp, err := p.newTokenProvider(scopes, lifetime)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev, ok := p.scoped[key]; ok {
		return prev, nil
	}
	if len(p.scoped) < maxScopedCaches {
		p.scoped[key] = tp
	}
	return tp, nil
}

func (p *Provider) newTokenProvider(scopes []string, lifetime time.Duration) (auth.TokenProvider, error) {
	switch p.cfg.Auth {
	case events.GCPAuthServiceAccountKey:
		creds, err := p.keyCredentials(p.key, scopes)
		if err != nil {
			return nil, err
		}
		return creds.TokenProvider, nil
	case events.GCPAuthImpersonation:
		if lifetime == 0 {
			lifetime = MaxTokenLifetime
		}
		return newTokenCache(p.impersonator(p.callerCreds, scopes, lifetime), p.set.earlyRefresh, p.log), nil
	default:
		creds, err := credentials.DetectDefault(p.detectOptions(scopes))
		if err != nil {
			return nil, fmt.Errorf("finding application default credentials: %w",
				events.Wrap(events.CodeUnavailable, err, "no application default credentials on this worker"))
		}
		return p.cached(creds).TokenProvider, nil
	}
}
