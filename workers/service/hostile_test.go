package service

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// mutate damages a valid body the ways hostile clients do.
func mutate(r *rand.Rand, body string) string {
	b := []byte(body)
	switch r.IntN(8) {
	case 0: // flip bytes
		for i := 0; i < 1+r.IntN(4) && len(b) > 0; i++ {
			b[r.IntN(len(b))] = byte(r.IntN(256))
		}
	case 1: // truncate
		if len(b) > 0 {
			b = b[:r.IntN(len(b))]
		}
	case 2: // duplicate a slice
		if len(b) > 2 {
			i := r.IntN(len(b) - 1)
			b = append(b[:i], append(append([]byte{}, b[i:]...), b[i:]...)...)
		}
	case 3:
		return strings.Repeat("{", 1+r.IntN(10000))
	case 4:
		return `{"secret":"` + strings.Repeat("\\u0000", 1+r.IntN(100)) + `"}`
	case 5:
		return strings.Replace(body, `"`, `'`, 1+r.IntN(3))
	case 6:
		return `{"name":` + strings.Repeat(`[`, 5000) + `}`
	case 7:
		return string([]byte{0xff, 0xfe, 0x00, '{', '}'})
	}
	return string(b)
}

// Random damage to every request kind: every request gets an answer, none
// is a panic, and the worker keeps serving.
func TestHostileInputNeverBreaksTheWorker(t *testing.T) {
	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	nc, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	s := events.Subjects{}
	valid := []struct{ subject, body string }{
		{s.Resolve("bio", "local-bio"), `{"secret":"biodb01","keys":["login"],"version":"1","fresh":true}`},
		{s.Test("bio", "local-bio"), `{"secret":"biodb01","keys":["login"]}`},
		{s.Token("bio", "local-bio"), `{"scopes":["a"],"duration":"1h"}`},
		{s.Admin("connections", "put"), `{"name":"x1","provider":"aws","groups":["bio"],"secrets":["*"],"cache":{"ttl":"5m"},"aws":{"region":"us-east-1","auth":"access_key","access_key_id":"AKIDEXAMPLEKEYID0001","secret_access_key":"s"}}`},
		{s.Admin("connections", "get"), `{"name":"local-bio"}`},
		{s.Admin("secrets", "put"), `{"connection":"local-bio","name":"biodb02","value":{"a":"b"}}`},
		{s.Admin("secrets", "list"), `{"connection":"local-bio"}`},
		{s.Admin("exports", "put"), `{"name":"e1","connection":"local-bio","subjects":["logs.>"],"cloudwatch":{"log_group":"g"}}`},
		{s.Invalidate(), `{"connection":"local-bio","secret":"biodb01"}`},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, v := range valid {
		for i := 0; i < 60; i++ {
			body := mutate(r, v.body)
			msg, err := nc.Request(v.subject, []byte(body), 5*time.Second)
			if err != nil {
				t.Fatalf("%s with %q: no answer: %v", v.subject, truncate(body), err)
			}
			if code := msg.Header.Get(micro.ErrorCodeHeader); code == "500" {
				t.Fatalf("%s with %q: internal error %s", v.subject, truncate(body), msg.Data)
			}
		}
	}
	if strings.Contains(w.logs.String(), "recovered panic") {
		t.Fatal("a handler panicked")
	}
	got, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		t.Fatalf("worker unhealthy after hostile input: %v", err)
	}
	if p, _ := got.String("password"); p != "password01" {
		t.Fatalf("the secret changed under hostile input: %q", p)
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
