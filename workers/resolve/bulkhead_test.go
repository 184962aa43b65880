package resolve

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
)

// TestPlainResolveReadsAsDecode: whatever plainResolve accepts, the strict
// decoder reads the same and Validate accepts; what it declines (an invalid
// name included) goes to the strict decoder and Validate.
func TestPlainResolveReadsAsDecode(t *testing.T) {
	accepted := []string{`{"secret":"biodb01"}`, `{"secret":"arn:aws:secretsmanager:us-east-1:1:secret:x-AbC"}`,
		`{"secret":"a~!"}`, `{"secret":"x"}`}
	declined := []string{``, `{}`, `{"secret":""}`, ` {"secret":"a"}`, `{"secret":"a"} `, `{"secret": "a"}`,
		`{"secret":"a\"b"}`, `{"secret":"a\\b"}`, `{"secret":"a\u0062"}`, `{"secret":"é"}`, "{\"secret\":\"a\tb\"}",
		`{"secret":"a","secret":"b"}`, `{"secret":"a","fresh":true}`, `{"secret":"a"}"}`, `{"secret":"a"}x`,
		`{"Secret":"a"}`, `{"secret":"` + strings.Repeat("a", maxMemoBody) + `"}`, `{"secret":"a","x":"}`,
		// Read alike, but invalid (CheckSecretName): the strict path refuses them.
		`{"secret":"a b"}`, `{"secret":"foo.>"}`, `{"secret":"foo.*"}`, `{"secret":" "}`, "{\"secret\":\"a\x7fb\"}"}
	for _, body := range accepted {
		got, ok := plainResolve([]byte(body))
		var want events.ResolveRequest
		if err := decodeValid([]byte(body), &want); !ok || err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: plain %+v %v, strict %+v %v", body, got, ok, want, err)
		}
	}
	for _, body := range declined {
		if got, ok := plainResolve([]byte(body)); ok {
			t.Fatalf("%s: read as %+v, want it left to the strict decoder", body, got)
		}
	}
	// Random bodies around the plain form: an accepted one always reads the
	// same as the strict decoder's.
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab\"\\{}:, \t\x00\x7f\xc3\xa9*>.")
	for i := 0; i < 20000; i++ {
		name := make([]byte, r.IntN(8))
		for j := range name {
			name[j] = alphabet[r.IntN(len(alphabet))]
		}
		body := []byte(`{"secret":"` + string(name) + `"}`)
		got, ok := plainResolve(body)
		if !ok {
			continue
		}
		var want events.ResolveRequest
		if err := decodeValid(body, &want); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: plain %+v, strict %+v %v", body, got, want, err)
		}
	}
}

// decodeValid is the strict path: events.Decode, then Validate.
func decodeValid(body []byte, in *events.ResolveRequest) error {
	if err := events.Decode(body, in); err != nil {
		return err
	}
	return in.Validate()
}

// A plain body naming an invalid secret is bad_request on the lane, before
// the admission: with the connection's bulkhead full it is not throttled,
// and no throttled audit event names it.
func TestStageRefusesAnInvalidPlainNameBeforeAdmission(t *testing.T) {
	w, _ := newFastWorker(t)
	b := w.bulkheadFor("c1")
	for {
		release, ok := b.admit.Enter()
		if !ok {
			break
		}
		t.Cleanup(release)
	}
	// As Dispatched runs them: the lane (which parses the subject), then
	// the stage.
	laneOf, staged := w.laneOf(events.OpResolve), w.stage(events.OpResolve)
	stage := func(req micro.Request, f *endpoint.Fields) ([]byte, func(), error) {
		if _, err := laneOf(req, f); err != nil {
			t.Fatalf("lane of %s: %v", req.Subject(), err)
		}
		return staged(req, f)
	}
	subject := events.Subjects{}.Op(events.OpResolve, "bio", "c1")
	for _, body := range []string{`{"secret":"db b"}`, `{"secret":"db.>"}`, `{"secret":"db*"}`, "{\"secret\":\"db\x7f\"}"} {
		var f endpoint.Fields
		_, release, err := stage(&fakeRequest{subject: subject, data: []byte(body)}, &f)
		if release != nil {
			release()
		}
		if events.AsWire(err).Code != events.CodeBadRequest || f.Audit.Secret != "" {
			t.Fatalf("%s: %v (audit secret %q), want bad_request before the admission", body, err, f.Audit.Secret)
		}
	}
	// The bulkhead is full indeed: a valid name is throttled.
	var f endpoint.Fields
	if _, _, err := stage(&fakeRequest{subject: subject, data: []byte(`{"secret":"dbx"}`)}, &f); events.AsWire(err).Code != events.CodeThrottled {
		t.Fatalf("valid name with the bulkhead full: %v, want throttled", err)
	}
}
