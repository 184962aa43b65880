package provider

import (
	"fmt"
	"strings"

	"github.com/cloudbridge/cloudbridge/events"
)

// Table is the set of providers a worker knows, in registration order. It
// holds every check of a connection that involves more than one provider, all
// computed from the registered Kinds: which provider names exist, that a
// connection carries no block of another provider, and whether a put moves
// kept secrets to a new destination. Package internal/provider/all builds the
// worker's table; tests may build their own.
type Table struct {
	kinds  []Kind
	byName map[string]Kind
	// allow bounds where credentials may be sent (WithEndpoints); the zero
	// value checks nothing.
	allow Allowlist
}

// WithEndpoints returns a copy of the table that also checks every endpoint a
// connection names (Endpointer) against allow: outside it, a put is a
// bad_request (Validate) and a stored connection is refused at use
// (CheckStored).
func (t *Table) WithEndpoints(allow Allowlist) *Table {
	c := *t
	c.allow = allow
	return &c
}

// Allowlist is the table's endpoint allowlist.
func (t *Table) Allowlist() Allowlist { return t.allow }

// outside returns the first endpoint of c outside the allowlist.
func (t *Table) outside(c *events.Connection) (Field, bool) {
	if !t.allow.Enforced() {
		return Field{}, false
	}
	k, ok := t.byName[c.Provider]
	if !ok {
		return Field{}, false
	}
	e, ok := k.(Endpointer)
	if !ok {
		return Field{}, false
	}
	for _, f := range e.Endpoints(c) {
		if f.Value != "" && !t.allow.Allows(f.Value) {
			return f, true
		}
	}
	return Field{}, false
}

// CheckStored refuses, as forbidden, a stored connection that sends
// credentials outside the allowlist (stored before the allowlist narrowed,
// or written to the bucket directly).
func (t *Table) CheckStored(c *events.Connection) error {
	if f, bad := t.outside(c); bad {
		return events.Errorf(events.CodeForbidden, "connection %q: %s host %q is outside %s; fix the connection or the flag",
			c.Name, f.Name, events.Clip(hostOf(f.Value), 80), AllowFlag)
	}
	return nil
}

// NewTable returns the table of kinds. It panics on an empty or duplicate
// name: registration is a programming error, not input.
func NewTable(kinds ...Kind) *Table {
	t := &Table{byName: map[string]Kind{}}
	for _, k := range kinds {
		n := k.Name()
		if n == "" || n == "provider" {
			panic(fmt.Sprintf("provider: invalid provider name %q", n))
		}
		if _, dup := t.byName[n]; dup {
			panic(fmt.Sprintf("provider: %q registered twice", n))
		}
		t.kinds = append(t.kinds, k)
		t.byName[n] = k
	}
	return t
}

// Names lists the registered providers in registration order.
func (t *Table) Names() []string {
	out := make([]string, len(t.kinds))
	for i, k := range t.kinds {
		out[i] = k.Name()
	}
	return out
}

// Kind returns the registered provider called name.
func (t *Table) Kind(name string) (Kind, bool) {
	k, ok := t.byName[name]
	return k, ok
}

// kindOf returns the provider of c, or the bad_request naming "provider".
func (t *Table) kindOf(c *events.Connection) (Kind, error) {
	if c.Provider == "" {
		return nil, events.Errorf(events.CodeBadRequest, "provider: required (%s)", orList(t.Names()))
	}
	k, ok := t.byName[c.Provider]
	if !ok {
		return nil, events.Errorf(events.CodeBadRequest, "provider: %q is not one of %s",
			events.Clip(c.Provider, 40), strings.Join(t.Names(), ", "))
	}
	return k, nil
}

// Validate checks a whole connection, with bad_request errors naming the
// field: first its generic fields (events.Connection.Validate: name, groups,
// secrets, cache), then that its provider is registered, that it carries no
// block of another provider, its own block (Kind.Validate), and last that
// every endpoint it names is within the table's allowlist (WithEndpoints).
func (t *Table) Validate(c *events.Connection) error {
	if err := c.Validate(); err != nil {
		return err
	}
	k, err := t.kindOf(c)
	if err != nil {
		return err
	}
	var others []string
	for _, o := range t.kinds {
		if o.Name() != k.Name() && o.HasBlock(c) {
			others = append(others, o.Name())
		}
	}
	if len(others) > 0 {
		return events.Errorf(events.CodeBadRequest, "%s: not allowed with provider %s", strings.Join(others, ", "), c.Provider)
	}
	if err := k.Validate(c); err != nil {
		return err
	}
	if f, bad := t.outside(c); bad {
		return events.Errorf(events.CodeBadRequest, "%s: host %q is outside %s",
			f.Name, events.Clip(hostOf(f.Value), 80), AllowFlag)
	}
	return nil
}

// Redact returns c with the sensitive fields of every provider's block
// replaced by events.Redacted (every block, so that even a connection that
// failed validation never shows a secret).
func (t *Table) Redact(c events.Connection) events.Connection {
	for _, k := range t.kinds {
		if k.HasBlock(&c) {
			c = k.Redact(c)
		}
	}
	return c
}

// KeepRedacted prepares a validated put of c over prev (the stored connection
// of the same name, or nil): it refuses a put that changes where credentials
// go while keeping a secret (CheckRouting), then copies the stored value of
// every sensitive field c carries as events.Redacted (Kind.KeepRedacted).
func (t *Table) KeepRedacted(c, prev *events.Connection) error {
	if err := t.CheckRouting(c, prev); err != nil {
		return err
	}
	k, err := t.kindOf(c)
	if err != nil {
		return err
	}
	if prev != nil && prev.Provider != c.Provider {
		prev = nil
	}
	return k.KeepRedacted(c, prev)
}

// Routing lists the fields of c that route its credentials: "provider", then
// its provider's Kind.Routing.
func (t *Table) Routing(c *events.Connection) []Field {
	out := []Field{{Name: "provider", Value: c.Provider}}
	if k, ok := t.byName[c.Provider]; ok {
		out = append(out, k.Routing(c)...)
	}
	return out
}

// RoutingChange answers whether putting c over prev changes a field that
// routes credentials while keeping a stored secret, that is while c carries
// a sensitive field as events.Redacted: the kept secret would go to a place
// (endpoint, account, role, token URI) its owner never sent it to. It
// returns the first changed field and the first kept one. With nothing
// stored (prev nil) nothing is kept, so nothing changes.
func (t *Table) RoutingChange(c, prev *events.Connection) (field, kept string, changed bool) {
	if prev == nil {
		return "", "", false
	}
	k, ok := t.byName[c.Provider]
	if !ok {
		return "", "", false
	}
	red := k.Redacted(c)
	if len(red) == 0 {
		return "", "", false
	}
	before := map[string]string{}
	for _, f := range t.Routing(prev) {
		before[f.Name] = f.Value
	}
	now := map[string]bool{}
	for _, f := range t.Routing(c) {
		now[f.Name] = true
		if before[f.Name] != f.Value {
			return f.Name, red[0], true
		}
	}
	for _, f := range t.Routing(prev) {
		if !now[f.Name] && f.Value != "" {
			return f.Name, red[0], true
		}
	}
	return "", "", false
}

// CheckRouting is RoutingChange as an error: a bad_request naming the changed
// field and the kept secret.
func (t *Table) CheckRouting(c, prev *events.Connection) error {
	if field, kept, changed := t.RoutingChange(c, prev); changed {
		return events.Errorf(events.CodeBadRequest, "%s: changed while %s is %s; give the secret again", field, kept, events.Redacted)
	}
	return nil
}

// Factories returns the factory of every registered provider, by name.
func (t *Table) Factories(env Env) map[string]Factory {
	out := make(map[string]Factory, len(t.kinds))
	for _, k := range t.kinds {
		out[k.Name()] = k.Factory(env)
	}
	return out
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
