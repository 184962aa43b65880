package cache

import (
	"context"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// A Ref answers as Peek does through every change of its key: a hit, a
// secret's and a connection's invalidation, a new value, a refresh, the TTL
// running out, an eviction and InvalidateConns.
func TestRefAgreesWithPeek(t *testing.T) {
	s, clk := newStore(t, 2)
	p := &fakeProvider{version: "v1", value: "x"}
	r := s.Wrap("c", Policy{TTL: time.Minute}, p)
	ctx := context.Background()
	ref := s.Ref("c", "db1", "")
	resolve := func(secret string) {
		t.Helper()
		if _, err := r.Resolve(ctx, provider.Request{Secret: secret}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string, wantHit bool, wantValue string) {
		t.Helper()
		got, ok := s.PeekRef(ref)
		peek, pok := s.Peek("c", provider.Request{Secret: "db1"})
		if ok != wantHit || pok != wantHit {
			t.Fatalf("%s: PeekRef hit %v, Peek hit %v, want %v", step, ok, pok, wantHit)
		}
		if ok && (string(got.Data) != wantValue || string(peek.Data) != wantValue || !got.Cached) {
			t.Fatalf("%s: PeekRef %q (cached %v), Peek %q, want %q", step, got.Data, got.Cached, peek.Data, wantValue)
		}
	}
	check("before any fetch", false, "")
	resolve("db1")
	check("cached", true, "x@db1")
	check("cached, again", true, "x@db1")
	s.Invalidate("c", "db1")
	check("secret invalidated", false, "")
	p.set("v2", "y", nil)
	resolve("db1")
	check("fetched again", true, "y@db1")
	s.Invalidate("c", "")
	check("connection invalidated", false, "")
	resolve("db1")
	check("fetched after the connection's invalidation", true, "y@db1")
	s.Invalidate("c", "db2") // a sibling's invalidation changes nothing for db1
	check("sibling invalidated", true, "y@db1")
	p.set("v3", "z", nil)
	if n := s.Refresh("c", "db1"); n != 1 {
		t.Fatalf("Refresh re-reads %d values, want 1", n)
	}
	s.bg.Wait()
	check("refreshed", true, "z@db1")
	clk.add(2 * time.Minute)
	check("past the TTL", false, "")
	resolve("db1")
	check("fetched past the TTL", true, "z@db1")
	// Two other secrets push db1 out of a store of 2.
	clk.add(time.Second)
	resolve("db2")
	clk.add(time.Second)
	resolve("db3")
	if _, ok := s.m.peek(key{conn: "c", secret: "db1"}); ok {
		t.Fatal("db1 was not evicted")
	}
	check("evicted", false, "")
	resolve("db1")
	check("fetched after its eviction", true, "z@db1")
	s.InvalidateConns(func(conn string) bool { return conn == "c" })
	check("InvalidateConns", false, "")
}
