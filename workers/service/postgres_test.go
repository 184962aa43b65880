package service

import (
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/internal/testenv/pgtest"
)

// The platform docs' story for real: the admin creates user01/password01 and
// biodb01, stores the credentials, and a service logs in with what cloudbridge
// resolved.
func TestBiodb01LogsInToPostgres(t *testing.T) {
	servers := []struct {
		name string
		pg   func(testenv.TB) *pgtest.Server
	}{
		{"local server on 5432", pgtest.Local},
		{"private server with scram-sha-256", pgtest.Scram},
	}
	for _, tc := range servers {
		t.Run(tc.name, func(t *testing.T) {
			pg := tc.pg(t)
			pg.CreateLogin(t, "user01", "password01", "biodb01")
			srv := natstest.Server(t)
			startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
			_, c := connect(t, srv.ClientURL())
			walkthrough(t, c)
			got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
			if err != nil {
				t.Fatal(err)
			}
			login, _ := got.String("login")
			password, _ := got.String("password")
			user, db, err := pg.Login(login, password, "biodb01")
			if err != nil {
				t.Fatalf("logging in with the resolved credentials: %v", err)
			}
			if user != "user01" || db != "biodb01" {
				t.Fatalf("logged in as %s on %s", user, db)
			}
			if tc.name != "local server on 5432" {
				if _, _, err := pg.Login(login, password+"x", "biodb01"); err == nil {
					t.Fatal("the scram server accepted a wrong password: the test proves nothing")
				}
			}
		})
	}
}
