package service

import (
	"testing"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
	"github.com/cloudbridge/cloudbridge/schemas"
)

// Every reply a real worker sends validates against its schema.
func TestRepliesMatchSchemas(t *testing.T) {
	srv := natstest.Server(t)
	cloud := &fakeCloud{}
	startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)), WithProvider(events.ProviderAWS, cloud.factory))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "cloud", Provider: events.ProviderAWS,
		Groups: []string{"bio"}, Secrets: []string{"*"},
		AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthAccessKey, AccessKeyID: "AKIDEXAMPLEKEY000001", SecretAccessKey: "k", SessionToken: "t"}}, nil)
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "bare", Provider: events.ProviderBuiltin}, nil)
	adminReq(t, c, events.ResourceSecrets, events.VerbPut, events.SecretPut{Connection: "local-bio", Name: "biodb-empty", Value: []byte(`{}`)}, nil)
	s := events.Subjects{}
	cases := []struct {
		schema, subject, body string
	}{
		{"resolve-reply", s.Resolve("bio", "local-bio"), `{"secret":"biodb01"}`},
		{"resolve-reply", s.Resolve("bio", "local-bio"), `{"secret":"biodb01","keys":["login"]}`},
		{"resolve-reply", s.Resolve("bio", "local-bio"), `{"secret":"biodb-empty"}`},
		{"resolve-reply", s.Resolve("bio", "cloud"), `{"secret":"text"}`},
		{"resolve-reply", s.Resolve("bio", "cloud"), `{"secret":"binary"}`},
		{"test-reply", s.Test("bio", "local-bio"), `{"secret":"biodb01","keys":["login"]}`},
		{"test-reply", s.Test("bio", "local-bio"), `{"secret":"biodb01","keys":["host"]}`},
		{"test-reply", s.Test("bio", "local-bio"), `{"secret":"nothere"}`},
		{"test-reply", s.Test("bio", "local-bio"), `{}`},
		{"error-reply", s.Resolve("bio", "local-bio"), `{"secret":1}`},
		{"error-reply", s.Resolve("chem", "local-bio"), `{"secret":"biodb01"}`},
		{"connection-stored", s.Admin("connections", "get"), `{"name":"cloud"}`},
		{"connection-stored", s.Admin("connections", "get"), `{"name":"bare"}`},
		{"connection-list", s.Admin("connections", "list"), `{}`},
		{"secret-names", s.Admin("secrets", "list"), `{"connection":"local-bio"}`},
		{"export-list", s.Admin("exports", "list"), `{}`},
		{"empty", s.Admin("secrets", "put"), `{"connection":"local-bio","name":"x","value":"y"}`},
		{"rekey-reply", s.AdminRekey(), `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.schema+" "+tc.body, func(t *testing.T) {
			msg := rawRequest(t, nc, tc.subject, []byte(tc.body))
			if err := schemas.Validate(tc.schema, msg.Data); err != nil {
				t.Fatalf("reply %s does not match %s: %v", msg.Data, tc.schema, err)
			}
		})
	}
}
