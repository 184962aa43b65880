package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/seal"
)

func (r *Registry) applyConnection(e jetstream.KeyValueEntry) {
	name := e.Key()
	if isDelete(e) {
		r.mu.Lock()
		delete(r.connections, name)
		r.mu.Unlock()
		r.notify(Change{Kind: KindConnection, Name: name, Deleted: true})
		return
	}
	c, err := r.decodeConnection(name, e.Value())
	if err != nil {
		r.log.Error().Str("conn", name).Err(err).Msg("ignoring unreadable connection record")
		r.mu.Lock()
		delete(r.connections, name)
		r.mu.Unlock()
	} else {
		r.mu.Lock()
		r.connections[name] = c
		r.mu.Unlock()
	}
	r.notify(Change{Kind: KindConnection, Name: name})
}

func (r *Registry) decodeConnection(name string, stored []byte) (events.Connection, error) {
	pt, _, err := r.openValue(r.conns.name, name, stored)
	if err != nil {
		return events.Connection{}, err
	}
	var c events.Connection
	if err := json.Unmarshal(pt, &c); err != nil {
		return events.Connection{}, fmt.Errorf("decoding connection %s: %w", name, err)
	}
	return c, nil
}

// Connection returns a connection from the watched view, with its sensitive
// fields in clear. It is the hot path of every request.
func (r *Registry) Connection(name string) (events.Connection, bool) {
	r.mu.RLock()
	c, ok := r.connections[name]
	r.mu.RUnlock()
	return c, ok
}

// LookupConnection reads a connection from the bucket itself, bypassing the
// watched view: for admin requests and to confirm a negative answer.
func (r *Registry) LookupConnection(ctx context.Context, name string) (events.Connection, error) {
	e, err := r.conns.kv.Get(ctx, name)
	if err != nil {
		return events.Connection{}, translate(fmt.Sprintf("connection %q", name), err)
	}
	c, err := r.decodeConnection(name, e.Value())
	if err != nil {
		return events.Connection{}, unreadable("connection", name, err)
	}
	return c, nil
}

// unreadable explains a record this worker cannot open, without its content.
func unreadable(what, name string, err error) error {
	why := "its record is corrupt"
	switch {
	case errors.Is(err, seal.ErrUnknownKey):
		why = "it is sealed under a master key this worker does not have (check --master-key-file and --previous-master-key-file)"
	case errors.Is(err, seal.ErrOpen):
		why = "its record failed authentication (wrong master key, or tampered)"
	}
	return events.Errorf(events.CodeUnavailable, "%s %q cannot be read: %s", what, name, why)
}

// Connections lists the watched connections, sorted by name.
func (r *Registry) Connections() []events.Connection {
	r.mu.RLock()
	out := make([]events.Connection, 0, len(r.connections))
	for _, c := range r.connections {
		out = append(out, c)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PutConnection validates and stores a connection, sealed, through the
// provider table (Options.Providers). Sensitive fields given as
// events.Redacted keep their stored values, unless the put changes a field
// that routes credentials: that is a bad_request.
func (r *Registry) PutConnection(ctx context.Context, c events.Connection) (events.Connection, error) {
	if err := events.CheckName("name", c.Name); err != nil {
		return events.Connection{}, err
	}
	prev, err := r.LookupConnection(ctx, c.Name)
	var prevp *events.Connection
	switch {
	case err == nil:
		prevp = &prev
	case errors.Is(err, events.ErrNotFound):
	default:
		return events.Connection{}, err
	}
	c.Normalize()
	if err := r.opts.Providers.Validate(&c); err != nil {
		return events.Connection{}, err
	}
	if err := r.opts.Providers.KeepRedacted(&c, prevp); err != nil {
		return events.Connection{}, err
	}
	if prevp != nil && prevp.Provider != c.Provider {
		if used := r.exportsUsing(c.Name); len(used) > 0 {
			return events.Connection{}, events.Errorf(events.CodeBadRequest,
				"provider: connection %q is used by export %q; changing its provider would break it", c.Name, used[0])
		}
	}
	pt, err := events.Marshal(c)
	if err != nil {
		return events.Connection{}, fmt.Errorf("encoding connection: %w", err)
	}
	val, err := r.sealValue(r.conns.name, c.Name, pt, r.opts.Providers.Redact(c))
	if err != nil {
		return events.Connection{}, err
	}
	rev, err := r.conns.kv.Put(ctx, c.Name, val)
	if err != nil {
		return events.Connection{}, translate("storing connection", err)
	}
	if prevp != nil && prevp.Provider == events.ProviderBuiltin && c.Provider != events.ProviderBuiltin {
		if err := r.deleteSecretsOf(ctx, c.Name); err != nil {
			return events.Connection{}, err
		}
	}
	r.conns.waitSeen(ctx, rev)
	return c, nil
}

// DeleteConnection removes a connection and its built-in secrets. A connection
// used by an export cannot be deleted.
func (r *Registry) DeleteConnection(ctx context.Context, name string) error {
	if _, err := r.LookupConnection(ctx, name); err != nil {
		return err
	}
	if used := r.exportsUsing(name); len(used) > 0 {
		return events.Errorf(events.CodeBadRequest, "connection %q is used by export %q; delete the export first", name, used[0])
	}
	if err := r.conns.kv.Purge(ctx, name); err != nil {
		return translate("deleting connection", err)
	}
	if err := r.deleteSecretsOf(ctx, name); err != nil {
		return err
	}
	r.conns.waitLatest(ctx)
	return nil
}
