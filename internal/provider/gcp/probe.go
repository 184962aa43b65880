package gcp

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
)

// Probe reports the steps before the secret: "credentials" (an access token
// was obtained; for impersonation, generateAccessToken succeeded) and
// "identity" (the service-account email in use).
func (p *Provider) Probe(ctx context.Context) []events.Step {
	var steps []events.Step
	tok, err := p.creds.TokenProvider.Token(ctx)
	if err != nil {
		steps = append(steps, events.FailStep(events.StepCredentials,
			fmt.Errorf("getting an access token for %s: %w", p.Identity(), classifyTokenError(err))))
	} else {
		left := ""
		if !tok.Expiry.IsZero() {
			left = fmt.Sprintf(", valid for %s", time.Until(tok.Expiry).Round(time.Second))
		}
		steps = append(steps, events.PassStep(events.StepCredentials, p.credentialsDetail()+left))
	}
	p.mu.Lock()
	identity, caller := p.identity, p.caller
	p.mu.Unlock()
	if e := metadataEmail(ctx, identity); e != identity {
		identity = e
		p.mu.Lock()
		p.identity = e
		p.mu.Unlock()
	}
	if e := metadataEmail(ctx, caller); e != caller {
		caller = e
		p.mu.Lock()
		p.caller = e
		p.mu.Unlock()
	}
	if p.cfg.Auth == events.GCPAuthImpersonation {
		identity = fmt.Sprintf("%s (impersonated by %s", identity, caller)
		if len(p.cfg.Delegates) > 0 {
			identity += " via " + strings.Join(p.cfg.Delegates, ", ")
		}
		identity += ")"
	}
	steps = append(steps, events.PassStep(events.StepIdentity, identity))
	if p.cfg.Events != nil {
		steps = append(steps, p.probeEvents(ctx))
	}
	return steps
}

func (p *Provider) credentialsDetail() string {
	switch p.cfg.Auth {
	case events.GCPAuthServiceAccountKey:
		return "access token obtained with the service-account key"
	case events.GCPAuthImpersonation:
		return "generateAccessToken for " + p.cfg.Impersonate + " succeeded"
	default:
		return "access token obtained from application default credentials"
	}
}
