package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/deploy"
	"github.com/cloudbridge/cloudbridge/events"
)

// Groups are enforced twice: by NATS (deploy/nats-server.conf lets user bio
// publish only bio subjects) and by the worker (the connection must list the
// group).
func TestGroupsEnforcedByNATSAndWorker(t *testing.T) {
	srv := deploy.StartSampleServer(t)
	cfg := joinedConfig(srv.ClientURL(), newMasterKey(t))
	cfg.User, cfg.Password = "worker", deploy.SampleUsers["worker"]
	startWorker(t, cfg)

	adm := events.NewClient(deploy.ConnectAs(t, srv, "admin").Conn, "")
	walkthrough(t, adm)
	adminReq(t, adm, events.ResourceConnections, events.VerbPut,
		events.Connection{Name: "chem-only", Provider: events.ProviderBuiltin, Groups: []string{"chem"}, Secrets: []string{"*"}}, nil)
	adminReq(t, adm, events.ResourceSecrets, events.VerbPut,
		events.SecretPut{Connection: "chem-only", Name: "chemdb", Value: []byte(`{"login":"c","password":"p"}`)}, nil)

	bioConn := deploy.ConnectAs(t, srv, "bio")
	bio := events.NewClient(bioConn.Conn, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// bio resolves its own connection.
	got, err := bio.Resolve(ctx, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatalf("bio resolving local-bio: %v", err)
	}
	if p, _ := got.String("password"); p != "password01" {
		t.Fatalf("password %q", p)
	}

	// The server refuses bio on chem subjects: the request never reaches a worker.
	chemSubject := events.Subjects{}.Resolve("chem", "chem-only")
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if _, err := bio.Resolve(short, "chem", "chem-only", events.ResolveRequest{Secret: "chemdb"}); err == nil {
		t.Fatal("bio resolved through a chem subject")
	}
	if perr := bioConn.WaitPermissionViolation(chemSubject, 2*time.Second); perr == nil {
		t.Fatalf("no permissions violation from the server for %s; errors: %v", chemSubject, bioConn.Errors())
	}

	// On its own subject, bio asking for a connection that does not list bio is refused by the worker.
	_, err = bio.Resolve(ctx, "bio", "chem-only", events.ResolveRequest{Secret: "chemdb"})
	if !errors.Is(err, events.ErrForbidden) {
		t.Fatalf("bio on chem-only: %v, want forbidden from the worker", err)
	}

	// And bio cannot reach the admin subjects at all.
	adminSubject := events.Subjects{}.Admin(events.ResourceConnections, events.VerbList)
	_ = bioConn.Publish(adminSubject, []byte(`{}`))
	if perr := bioConn.WaitPermissionViolation(adminSubject, 2*time.Second); perr == nil {
		t.Fatal("bio published an admin subject without a permissions violation")
	}
}
