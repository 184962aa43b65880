package builtin

import (
	"context"
	"errors"
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

type mapStore map[string]provider.StoredSecret

func (m mapStore) Secret(_ context.Context, conn, name string) (provider.StoredSecret, error) {
	if s, ok := m[conn+"/"+name]; ok {
		return s, nil
	}
	return provider.StoredSecret{}, events.ErrNotFound
}

func TestKind(t *testing.T) {
	c := events.Connection{Name: "local-bio", Provider: events.ProviderBuiltin}
	if Kind.Name() != "builtin" || Kind.HasBlock(&c) || Kind.Validate(&c) != nil || len(Kind.Redacted(&c)) != 0 ||
		len(Kind.Routing(&c)) != 0 || Kind.KeepRedacted(&c, nil) != nil {
		t.Fatal("a builtin connection has a block")
	}
	r, err := Kind.Factory(provider.Env{Secrets: mapStore{"local-bio/biodb01": {Value: []byte(`"pw"`), Version: 7, Revision: 7}}})(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Resolve(context.Background(), provider.Request{Secret: "biodb01"})
	if err != nil || string(s.Data) != "pw" || s.Version != "7" {
		t.Fatalf("resolve = %q %q %v", s.Data, s.Version, err)
	}
	if _, err := r.Resolve(context.Background(), provider.Request{Secret: "biodb01", Version: "6"}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("old version: %v", err)
	}
	if _, err := Kind.Factory(provider.Env{})(context.Background(), c); !errors.Is(err, events.ErrInternal) {
		t.Fatalf("no store: %v", err)
	}
}
