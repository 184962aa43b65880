package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
)

func (r *Registry) applyExport(e jetstream.KeyValueEntry, initial bool) *Change {
	name := e.Key()
	deleted := isDelete(e)
	var x events.Export
	if !deleted {
		if err := json.Unmarshal(e.Value(), &x); err != nil {
			r.log.Error().Str("export", name).Err(err).Msg("ignoring unreadable export record")
			deleted = true
		}
	}
	r.mu.Lock()
	if deleted {
		delete(r.exportsByNm, name)
	} else {
		r.exportsByNm[name] = x
	}
	r.mu.Unlock()
	return &Change{Kind: KindExport, Name: name, Deleted: deleted, Initial: initial}
}

// Exports lists the watched export blocks, sorted by name.
func (r *Registry) Exports() []events.Export {
	r.mu.RLock()
	out := make([]events.Export, 0, len(r.exportsByNm))
	for _, x := range r.exportsByNm {
		out = append(out, x)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (r *Registry) exportsUsing(conn string) []string {
	var out []string
	for _, x := range r.Exports() {
		if x.Connection == conn {
			out = append(out, x.Name)
		}
	}
	return out
}

// LookupExport reads an export block from the bucket.
func (r *Registry) LookupExport(ctx context.Context, name string) (events.Export, error) {
	e, err := r.exports.kv.Get(ctx, name)
	if err != nil {
		return events.Export{}, translate(fmt.Sprintf("export %q", name), err)
	}
	var x events.Export
	if err := json.Unmarshal(e.Value(), &x); err != nil {
		return events.Export{}, fmt.Errorf("decoding export %q: %w", name, err)
	}
	return x, nil
}

// PutExport validates and stores an export block; its connection must exist
// and have the sink's provider.
func (r *Registry) PutExport(ctx context.Context, x events.Export) (events.Export, error) {
	if err := x.Validate(); err != nil {
		return events.Export{}, err
	}
	if len(r.opts.LogsSubjects) > 0 {
		for i, f := range x.Subjects {
			if !events.SubjectWithin(f, r.opts.LogsSubjects) {
				return events.Export{}, events.Errorf(events.CodeBadRequest,
					"subjects[%d]: %q is outside the logs stream's subjects %v", i, f, r.opts.LogsSubjects)
			}
		}
	}
	if err := oneStream(x.Subjects, r.opts.AuditSubjects); err != nil {
		return events.Export{}, err
	}
	c, err := r.LookupConnection(ctx, x.Connection)
	if err != nil {
		return events.Export{}, err
	}
	if want := x.Provider(); c.Provider != want {
		return events.Export{}, events.Errorf(events.CodeBadRequest,
			"connection: %q has provider %s; this sink needs a connection of provider %s", x.Connection, c.Provider, want)
	}
	b, err := events.Marshal(x)
	if err != nil {
		return events.Export{}, fmt.Errorf("encoding export: %w", err)
	}
	rev, err := r.exports.kv.Put(ctx, x.Name, b)
	if err != nil {
		return events.Export{}, translate("storing export", err)
	}
	r.exports.waitSeen(ctx, rev)
	return x, nil
}

// DeleteExport removes an export block.
func (r *Registry) DeleteExport(ctx context.Context, name string) error {
	if _, err := r.LookupExport(ctx, name); err != nil {
		return err
	}
	if err := r.exports.kv.Purge(ctx, name); err != nil {
		return translate("deleting export", err)
	}
	r.exports.waitLatest(ctx)
	return nil
}

// oneStream refuses filters of which some lie within the audit subjects and
// some do not: an export reads one stream.
func oneStream(filters, audit []string) error {
	if len(audit) == 0 {
		return nil
	}
	first := -1
	for i, f := range filters {
		in := events.SubjectWithin(f, audit)
		if first < 0 {
			first = i
		}
		if in != events.SubjectWithin(filters[first], audit) {
			return events.Errorf(events.CodeBadRequest,
				"subjects[%d]: %q and subjects[%d]: %q read different streams (audit subjects are %v): an export reads one stream; use two exports",
				first, filters[first], i, f, audit)
		}
	}
	return nil
}
