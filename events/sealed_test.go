package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

func curveKey(t *testing.T) (nkeys.KeyPair, *ReplySealer) {
	t.Helper()
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewReplySealer(kp)
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != s.PublicKey() {
		t.Fatalf("public key %s, want %s", s.PublicKey(), pub)
	}
	return kp, s
}

// ReplySealer speaks the nkeys xkey format both ways, and binds the request
// id and expiry as SealReply/OpenReply do.
func TestReplySealerInteroperatesWithNkeys(t *testing.T) {
	workerKP, worker := curveKey(t)
	clientKP, client := curveKey(t)
	_, stranger := curveKey(t)
	body := []byte(`{"value":"password01"}`)
	now := time.Now()
	exp := now.Add(SealedReplyTTL)

	for i := 0; i < 2; i++ { // the second time from the memo
		sealed, err := worker.Seal(client.PublicKey(), "req-1", exp, body)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, []byte("password01")) {
			t.Fatal("sealed reply holds the plaintext")
		}
		for name, open := range map[string]func(id string, at time.Time) ([]byte, error){
			"nkeys": func(id string, at time.Time) ([]byte, error) {
				return OpenReply(clientKP, worker.PublicKey(), id, at, sealed)
			},
			"sealer": func(id string, at time.Time) ([]byte, error) { return client.Open(worker.PublicKey(), id, at, sealed) },
		} {
			got, err := open("req-1", now)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%s open: %v %s", name, err, got)
			}
			if _, err := open("req-2", now); !errors.Is(err, ErrSealedReply) {
				t.Fatalf("%s: replayed into another request: %v", name, err)
			}
			if _, err := open("req-1", exp); !errors.Is(err, ErrSealedReply) {
				t.Fatalf("%s: opened at its expiry: %v", name, err)
			}
		}
		if _, err := stranger.Open(worker.PublicKey(), "req-1", now, sealed); !errors.Is(err, ErrSealedReply) {
			t.Fatalf("opened with another key: %v", err)
		}
		if _, err := client.Open(stranger.PublicKey(), "req-1", now, sealed); !errors.Is(err, ErrSealedReply) {
			t.Fatalf("opened as from another sender: %v", err)
		}
		tampered := append([]byte(nil), sealed...)
		tampered[len(tampered)-1] ^= 1
		if _, err := client.Open(worker.PublicKey(), "req-1", now, tampered); !errors.Is(err, ErrSealedReply) {
			t.Fatalf("opened a tampered reply: %v", err)
		}
	}
	// Sealed by nkeys, opened by the sealer.
	sealed, err := SealReply(workerKP, client.PublicKey(), "req-3", exp, body)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := client.Open(worker.PublicKey(), "req-3", now, sealed); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("sealer opening an nkeys-sealed reply: %v %s", err, got)
	}
	// Bad input.
	if _, err := worker.Seal("Xnotakey", "req-1", exp, body); err == nil {
		t.Fatal("sealed to a key that is not one")
	}
	if _, err := worker.Seal(client.PublicKey(), "req-1", exp, nil); err == nil {
		t.Fatal("sealed an empty body")
	}
	// The plaintext is what json.Marshal writes, a request id needing
	// escapes included.
	for _, id := range []string{"req-1", `a"b\c`, "é"} {
		sealed, err := worker.Seal(client.PublicKey(), id, exp, body)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := clientKP.Open(sealed, worker.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(SealedReply{RequestID: id, Expires: exp.UTC(), Body: body})
		if !bytes.Equal(pt, want) {
			t.Fatalf("plaintext\n%s\nwant\n%s", pt, want)
		}
	}
	for _, data := range [][]byte{nil, []byte("xkv1"), []byte("xkv2" + string(make([]byte, 40)))} {
		if _, err := client.Open(worker.PublicKey(), "req-1", now, data); !errors.Is(err, ErrSealedReply) {
			t.Fatalf("opened %q: %v", data, err)
		}
	}
	if _, err := NewReplySealer(mustUser(t)); err == nil {
		t.Fatal("a user key pair made a reply sealer")
	}
}

func mustUser(t *testing.T) nkeys.KeyPair {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// The memo of shared keys stays bounded.
func TestReplySealerMemoBounded(t *testing.T) {
	_, worker := curveKey(t)
	worker.limit = 8
	for i := 0; i < worker.limit+10; i++ {
		kp, _ := nkeys.CreateCurveKeys()
		pub, _ := kp.PublicKey()
		if _, err := worker.Seal(pub, "r", time.Now().Add(time.Minute), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(worker.memo); n != worker.limit {
		t.Fatalf("memo holds %d keys, bound %d", n, worker.limit)
	}
}
