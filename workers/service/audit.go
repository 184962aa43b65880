package service

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/audit"
	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/seal"
)

// auditStreamConfig is the audit stream: every audit subject, file storage,
// its own retention, the replicas of the other streams, and a duplicate
// window so a request seen by several workers is stored once.
func auditStreamConfig(subjects events.Subjects, retention time.Duration, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        subjects.AuditStream(),
		Description: "cloudbridge audit events: one value-free event per request",
		Subjects:    []string{subjects.AuditWildcard()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      retention,
		Replicas:    replicas,
		Duplicates:  audit.DedupWindow,
	}
}

// startAudit ensures the audit stream, starts the publisher and hooks it into
// the runner, with fingerprints under a key derived from the master key.
func (s *Service) startAudit(ctx context.Context, js jetstream.JetStream, subjects events.Subjects, sealer *seal.Sealer) error {
	if s.noAudit {
		return nil
	}
	cfg := auditStreamConfig(subjects, s.cfg.AuditRetention, s.cfg.KVReplicas)
	ensure := func(ctx context.Context) error {
		_, err := bus.EnsureStream(ctx, js, cfg)
		if err != nil {
			return fmt.Errorf("creating audit stream %s: %w", cfg.Name, err)
		}
		return nil
	}
	if err := bus.Retry(ctx, s.log, "creating the audit stream", ensure); err != nil {
		return err
	}
	key, err := sealer.Derive(audit.FingerprintInfo)
	if err != nil {
		return err
	}
	s.fingerprints = audit.NewFingerprinter(key)
	mode := audit.BestEffort
	if s.cfg.Audit == string(audit.Required) {
		mode = audit.Required
	}
	// A connection of its own: the events' traffic (and the server's work
	// reading it) never queues with the replies on the worker's connection.
	anc, err := s.dial(ctx, "cloudbridge-audit")
	if err != nil {
		return err
	}
	s.auditNC = anc
	ajs, err := jetstream.New(anc)
	if err != nil {
		return fmt.Errorf("opening JetStream for audit events: %w", err)
	}
	// A stream deleted while the worker runs is re-created when a publish
	// finds it missing.
	s.auditor = audit.New(audit.Config{JS: ajs, Mode: mode, Logger: s.log, Recover: ensure})
	s.runner.SetAudit(endpoint.Audit{Auditor: s.auditor, Subjects: subjects, Instance: s.instanceID, NewEvent: audit.NewEvent})
	return nil
}

func (s *Service) instanceID() string {
	if p := s.instance.Load(); p != nil {
		return *p
	}
	return ""
}

// withoutAudit assembles a worker that records no audit events: the baseline
// of the audit benchmark, never a configuration.
func withoutAudit() Option { return func(s *Service) { s.noAudit = true } }
