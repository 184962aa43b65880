package resolve

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func (w *Worker) handleTest(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.TestRequest
	c, err := w.accept(ctx, events.OpTest, req, f, &in)
	f.Audit.Secret = in.Secret
	if err != nil {
		return nil, err
	}
	rep := &events.TestReply{OK: true, Steps: []events.Step{}}
	b, err := w.provider(ctx, c)
	if err != nil {
		rep.Add(events.FailStep(events.StepCredentials, err))
		w.addConsumerStep(rep, c.Name)
		return rep, nil
	}
	release, err := b.bulkhead.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if p, ok := b.raw.(provider.Prober); ok {
		for _, st := range p.Probe(ctx) {
			rep.Add(st)
		}
	}
	w.addConsumerStep(rep, c.Name)
	if in.Secret == "" {
		if len(rep.Steps) == 0 {
			rep.Add(events.PassStep(events.StepSecret, "no secret named: pass --secret to read one"))
		}
		return rep, nil
	}
	if err := checkSecretAllowed(c, in.Secret); err != nil {
		rep.Add(events.FailStep(events.StepSecret, err))
		return rep, nil
	}
	sec, err := b.raw.Resolve(ctx, provider.Request{Secret: in.Secret, Fresh: true})
	if err != nil {
		rep.Add(events.FailStep(events.StepSecret, err))
		if len(in.Keys) > 0 {
			rep.Add(events.Step{Name: events.StepKeys, OK: false, Detail: "not checked: the secret could not be read"})
		}
		return rep, nil
	}
	detail := "readable"
	if sec.Version != "" {
		detail = "readable, version " + sec.Version
	}
	rep.Add(events.PassStep(events.StepSecret, detail))
	rep.Add(keysStep(in.Secret, sec, in.Keys))
	return rep, nil
}

func keysStep(secret string, sec provider.Secret, want []string) events.Step {
	have, isObject := Keys(sec)
	if !isObject {
		if len(want) > 0 {
			return events.FailStep(events.StepKeys, events.Errorf(events.CodeNotFound, "secret %q is not a JSON object, so it has no keys", events.Clip(secret, events.QuoteMax)))
		}
		return events.PassStep(events.StepKeys, "not a JSON object: no keys")
	}
	sort.Strings(have)
	set := map[string]bool{}
	for _, k := range have {
		set[k] = true
	}
	var missing []string
	for _, k := range want {
		if !set[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return events.FailStep(events.StepKeys, events.Errorf(events.CodeNotFound, "secret %q lacks keys: %s", events.Clip(secret, events.QuoteMax), events.Clip(strings.Join(missing, ", "), 4*events.QuoteMax)))
	}
	return events.PassStep(events.StepKeys, fmt.Sprintf("keys present: %s", strings.Join(have, ", ")))
}

// EventHealth is the health of this worker's change-event consumers (the
// rotation manager provides it).
type EventHealth interface {
	// Degraded reports whether the consumer of conn on this worker cannot
	// receive, the class of why (a wire code, never the cloud's text) and
	// since when; false when it receives or this worker runs none.
	Degraded(conn string) (degraded bool, cause string, since time.Time)
}

// addConsumerStep adds, after the probe's fresh events step, a failed events
// step when the running consumer of conn on this worker is degraded: a
// probe that passes does not mean the consumer receives (its own
// credentials, its long polls), nor the reverse, which the probe's own step
// reports as failed.
func (w *Worker) addConsumerStep(rep *events.TestReply, conn string) {
	if w.cfg.Events == nil {
		return
	}
	degraded, cause, since := w.cfg.Events.Degraded(conn)
	if !degraded {
		return
	}
	code := events.Code(cause)
	if code.Help() == "" { // not a wire code
		code = events.CodeUnavailable
	}
	rep.Add(events.FailStep(events.StepEvents, events.Errorf(code,
		"the change-event consumer on this worker cannot receive (%s) since %s: the connection is degraded, its secrets use the degraded TTL",
		code, since.UTC().Format(time.RFC3339))))
}
