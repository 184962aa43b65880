package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
)

// Dead serves cloudbridge.v1.admin.dead.{list,get,replay,purge}: it reads the
// dead-letter stream (written by the export workers), republishes dead
// letters' original events to their subjects and removes dead letters.
type Dead struct {
	subjects events.Subjects
	js       jetstream.JetStream
	stream   string // the dead-letter stream, e.g. CLOUDBRIDGE_DEAD
	runner   *endpoint.Runner
	exports  ExportLookup // nil: every export name is taken as known
}

// ExportLookup is what the dead-letter endpoints need of the registry: does
// an export block exist (a not_found error when it does not).
type ExportLookup interface {
	LookupExport(ctx context.Context, name string) (events.Export, error)
}

// WithExports makes a request about an export that neither exists nor has
// dead letters fail not_found (a typo), instead of answering "none". The
// dead letters of a deleted block stay listable, replayable and purgeable.
func (d *Dead) WithExports(x ExportLookup) *Dead {
	d.exports = x
	return d
}

// NewDead returns the dead-letter admin endpoints on stream.
func NewDead(subjects events.Subjects, js jetstream.JetStream, stream string, runner *endpoint.Runner) *Dead {
	return &Dead{subjects: subjects, js: js, stream: stream, runner: runner}
}

// Register adds the dead-letter endpoints to the service.
func (d *Dead) Register(svc *srv.Service) error {
	for verb, fn := range map[string]endpoint.Func{
		events.VerbList: d.list, events.VerbGet: d.get, events.VerbReplay: d.replay, events.VerbPurge: d.purge,
	} {
		name := "admin-dead-" + verb
		if err := svc.AddEndpoint(name, d.runner.Handler(name, fn),
			srv.WithSubject(d.subjects.AdminDead(verb))); err != nil {
			return fmt.Errorf("adding endpoint %s: %w", name, err)
		}
	}
	return nil
}

// maxReplay bounds the dead letters one replay or purge request handles; the
// reply's More says to ask again.
const maxReplay = 1000

func decodeQuery(req micro.Request, f *endpoint.Fields) (events.DeadQuery, error) {
	var q events.DeadQuery
	if err := events.Decode(req.Data(), &q); err != nil {
		return q, err
	}
	f.Export = q.Export
	return q, q.Validate()
}

func (d *Dead) list(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	q, err := decodeQuery(req, f)
	if err != nil {
		return nil, err
	}
	out := events.DeadList{Export: q.Export, DeadLetters: []events.DeadSummary{}}
	err = d.scan(ctx, q.Export, func(_ uint64, dl events.DeadLetter) bool {
		if !q.Matches(dl) {
			return true
		}
		if len(out.DeadLetters) == events.MaxDeadList {
			out.Truncated = true
			return false
		}
		out.DeadLetters = append(out.DeadLetters, events.DeadSummary{Seq: dl.Seq, Subject: dl.Subject,
			Reason: dl.Reason, Detail: dl.Detail, Size: len(dl.Payload), Time: dl.Time})
		return true
	})
	return out, err
}

func (d *Dead) get(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var ref events.DeadRef
	if err := events.Decode(req.Data(), &ref); err != nil {
		return nil, err
	}
	f.Export = ref.Export
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	var found *events.DeadLetter
	err := d.scan(ctx, ref.Export, func(_ uint64, dl events.DeadLetter) bool {
		if dl.Seq == ref.Seq {
			found = &dl
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, events.Errorf(events.CodeNotFound, "export %q has no dead letter of seq %d", ref.Export, ref.Seq)
	}
	return found, nil
}

type deadMsg struct {
	seq uint64 // in the dead-letter stream
	dl  events.DeadLetter
}

func (d *Dead) selected(ctx context.Context, q events.DeadQuery) ([]deadMsg, bool, error) {
	var sel []deadMsg
	more := false
	err := d.scan(ctx, q.Export, func(seq uint64, dl events.DeadLetter) bool {
		if !q.Matches(dl) {
			return true
		}
		if len(sel) == maxReplay {
			more = true
			return false
		}
		sel = append(sel, deadMsg{seq, dl})
		return true
	})
	return sel, more, err
}

// replay republishes each selected dead letter's original event to its
// subject (the log stream stores it again and the export delivers it), then
// deletes the dead letter. The publish carries a message id derived from the
// dead letter, so a replay that runs twice at once stores the event once.
func (d *Dead) replay(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	q, err := decodeQuery(req, f)
	if err != nil {
		return nil, err
	}
	sel, more, err := d.selected(ctx, q)
	if err != nil {
		return nil, err
	}
	stream, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return nil, unavailable("dead-letter stream", err)
	}
	out := events.DeadResult{Export: q.Export, More: more}
	for _, m := range sel {
		msg := nats.NewMsg(m.dl.Subject)
		msg.Data = m.dl.Payload
		msg.Header.Set(jetstream.MsgIDHeader, "cloudbridge-replay-"+d.stream+"-"+strconv.FormatUint(m.seq, 10))
		if _, err := d.js.PublishMsg(ctx, msg); err != nil {
			return nil, events.Errorf(events.CodeUnavailable,
				"replayed %d dead letter(s) of %s, then republishing seq %d to %s failed (run replay again): %s",
				out.Count, q.Export, m.dl.Seq, m.dl.Subject, safeJSError(err))
		}
		if err := stream.DeleteMsg(ctx, m.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, events.Errorf(events.CodeUnavailable,
				"replayed seq %d of %s but could not remove its dead letter: %s", m.dl.Seq, q.Export, safeJSError(err))
		}
		out.Count++
	}
	return out, nil
}

func (d *Dead) purge(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	q, err := decodeQuery(req, f)
	if err != nil {
		return nil, err
	}
	sel, more, err := d.selected(ctx, q)
	if err != nil {
		return nil, err
	}
	stream, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return nil, unavailable("dead-letter stream", err)
	}
	out := events.DeadResult{Export: q.Export, More: more}
	for _, m := range sel {
		if err := stream.DeleteMsg(ctx, m.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, events.Errorf(events.CodeUnavailable, "removed %d dead letter(s) of %s, then: %s", out.Count, q.Export, safeJSError(err))
		}
		out.Count++
	}
	return out, nil
}

// scan calls fn with every dead letter of export, oldest first, until fn
// returns false.
func (d *Dead) scan(ctx context.Context, export string, fn func(seq uint64, dl events.DeadLetter) bool) error {
	subject := d.subjects.Dead(export)
	stream, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return unavailable("dead-letter stream", err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return unavailable("dead-letter stream", err)
	}
	if info.State.Subjects[subject] == 0 {
		return d.known(ctx, export)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return unavailable("reading dead letters", err)
	}
	for {
		wait := 2 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if wait <= 0 {
			return events.Errorf(events.CodeTimeout, "reading the dead letters of %s took too long", export)
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(wait))
		if err != nil {
			return unavailable("reading dead letters", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			var dl events.DeadLetter
			if json.Unmarshal(m.Data(), &dl) == nil {
				if !fn(meta.Sequence.Stream, dl) {
					return nil
				}
			}
			if meta.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return unavailable("reading dead letters", err)
		}
		if n == 0 {
			return nil // nothing left (the last ones were removed meanwhile)
		}
	}
}

// known is nil for an export block that exists, not_found naming it when
// it does not (and has no dead letters, or scan would not ask).
func (d *Dead) known(ctx context.Context, export string) error {
	if d.exports == nil {
		return nil
	}
	_, err := d.exports.LookupExport(ctx, export)
	var we *events.Error
	if errors.As(err, &we) && we.Code == events.CodeNotFound {
		return events.Errorf(events.CodeNotFound, "export %q does not exist and has no dead letters", export)
	}
	return err
}

func unavailable(what string, err error) error {
	return events.Errorf(events.CodeUnavailable, "%s: %s", what, safeJSError(err))
}

// safeJSError is the part of a JetStream error fit for a requester: the API
// error's description, or a generic sentence.
func safeJSError(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Description
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "JetStream did not answer in time"
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return "stream not found"
	}
	return "JetStream request failed"
}
