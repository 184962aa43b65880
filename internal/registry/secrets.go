package registry

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

func secretKey(conn, name string) string { return conn + "." + name }

func (r *Registry) applySecret(e jetstream.KeyValueEntry) {
	conn, name, ok := strings.Cut(e.Key(), ".")
	if !ok {
		return
	}
	r.notify(Change{Kind: KindSecret, Conn: conn, Name: name, Deleted: isDelete(e)})
}

// StoredSecret is a built-in secret's value and its revision (the type the
// builtin provider reads through provider.SecretStore).
type StoredSecret = provider.StoredSecret

// PutSecret stores a built-in secret of a builtin connection, sealed.
func (r *Registry) PutSecret(ctx context.Context, conn, name string, value []byte) error {
	if err := r.requireBuiltin(ctx, conn); err != nil {
		return err
	}
	key := secretKey(conn, name)
	var floor uint64
	if e, err := r.secrets.kv.Get(ctx, key); err == nil {
		floor = storedGen(e.Value())
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return translate("reading secret", err)
	}
	val, err := r.sealValue(r.secrets.name, key, floor, value, nil)
	if err != nil {
		return err
	}
	rev, err := r.secrets.kv.Put(ctx, key, val)
	if err != nil {
		return translate("storing secret", err)
	}
	r.secrets.waitSeen(ctx, rev)
	return nil
}

// Secret reads a built-in secret straight from the bucket.
func (r *Registry) Secret(ctx context.Context, conn, name string) (StoredSecret, error) {
	e, err := r.secrets.kv.Get(ctx, secretKey(conn, name))
	if err != nil {
		return StoredSecret{}, translate(fmt.Sprintf("secret %q", name), err)
	}
	pt, _, err := r.openValue(r.secrets.name, e.Key(), e.Value())
	if err != nil {
		return StoredSecret{}, unreadable("secret", name, err)
	}
	return StoredSecret{Value: pt, Revision: e.Revision()}, nil
}

// SecretNames lists the names of a connection's built-in secrets, sorted.
func (r *Registry) SecretNames(ctx context.Context, conn string) ([]string, error) {
	if _, err := r.LookupConnection(ctx, conn); err != nil {
		return nil, err
	}
	return r.secretNames(ctx, conn)
}

func (r *Registry) secretNames(ctx context.Context, conn string) ([]string, error) {
	lister, err := r.secrets.kv.ListKeysFiltered(ctx, conn+".>")
	if err != nil {
		return nil, translate("listing secrets", err)
	}
	names := []string{}
	for k := range lister.Keys() {
		names = append(names, strings.TrimPrefix(k, conn+"."))
	}
	sort.Strings(names)
	return names, nil
}

// DeleteSecret removes a built-in secret, even one whose record (or whose
// connection's record) cannot be opened.
func (r *Registry) DeleteSecret(ctx context.Context, conn, name string) error {
	if _, _, _, err := r.lookupConnection(ctx, conn); err != nil {
		return err
	}
	key := secretKey(conn, name)
	if _, err := r.secrets.kv.Get(ctx, key); err != nil {
		return translate(fmt.Sprintf("secret %q", name), err)
	}
	if err := r.secrets.kv.Purge(ctx, key); err != nil {
		return translate("deleting secret", err)
	}
	return nil
}

func (r *Registry) deleteSecretsOf(ctx context.Context, conn string) error {
	names, err := r.secretNames(ctx, conn)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := r.secrets.kv.Purge(ctx, secretKey(conn, n)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return translate("deleting secrets of connection", err)
		}
	}
	return nil
}

func (r *Registry) requireBuiltin(ctx context.Context, conn string) error {
	c, err := r.LookupConnection(ctx, conn)
	if err != nil {
		return err
	}
	if c.Provider != events.ProviderBuiltin {
		return events.Errorf(events.CodeBadRequest,
			"connection: %q has provider %s; the built-in store holds secrets of builtin connections only", conn, c.Provider)
	}
	return nil
}
