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
		r.setSealedOut(name, nil)
		r.notify(Change{Kind: KindConnection, Name: name, Deleted: true})
		return
	}
	c, err := r.decodeConnection(name, e.Value())
	if errors.Is(err, ErrRollback) {
		// A replayed old record: keep serving the newer connection seen
		// before (observeGen logged and counted it).
		return
	}
	r.setSealedOut(name, err)
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
	c, _, readErr, err := r.lookupConnection(ctx, name)
	if err != nil {
		return events.Connection{}, err
	}
	if readErr != nil {
		return events.Connection{}, unreadable("connection", name, readErr)
	}
	return c, nil
}

// lookupConnection reads a connection from the bucket: err is the bucket's
// answer (not_found, unavailable), readErr why a stored record cannot be
// opened, gen the stored record's generation (storedGen).
func (r *Registry) lookupConnection(ctx context.Context, name string) (c events.Connection, gen uint64, readErr, err error) {
	e, err := r.conns.kv.Get(ctx, name)
	if err != nil {
		return events.Connection{}, 0, nil, translate(fmt.Sprintf("connection %q", name), err)
	}
	c, readErr = r.decodeConnection(name, e.Value())
	return c, storedGen(e.Value()), readErr, nil
}

// unreadable explains a record this worker cannot open, without its content.
func unreadable(what, name string, err error) error {
	return events.Wrap(events.CodeUnavailable, err, "%s %q cannot be read: %s", what, name, unreadableWhy(err))
}

// unreadableWhy explains why a record cannot be opened, from safe parts.
func unreadableWhy(err error) string {
	switch {
	case errors.Is(err, ErrRollback):
		return "its record is older than one this worker has already seen (an old value written back into the bucket); an admin may put or delete it"
	case errors.Is(err, seal.ErrUnknownKey):
		return "it is sealed under a master key this worker does not have (check --master-key-file and --previous-master-key-file)"
	case errors.Is(err, seal.ErrOpen):
		return "its record failed authentication (wrong master key, or tampered)"
	}
	return "its record is corrupt"
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
	prev, floor, readErr, err := r.lookupConnection(ctx, c.Name)
	var prevp *events.Connection
	switch {
	case err == nil && readErr == nil:
		prevp = &prev
	case err == nil:
		// An unreadable record (wrong key, tampered, replayed) is replaced:
		// nothing of it is kept, so a [redacted] field is refused below.
		r.log.Warn().Str("conn", c.Name).Err(readErr).Msg("replacing an unreadable connection record")
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
	val, err := r.sealValue(r.conns.name, c.Name, floor, pt, r.opts.Providers.Redact(c))
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

// DeleteConnection removes a connection and its built-in secrets, even one
// whose record cannot be opened. A connection used by an export cannot be
// deleted.
func (r *Registry) DeleteConnection(ctx context.Context, name string) error {
	if _, _, _, err := r.lookupConnection(ctx, name); err != nil {
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
