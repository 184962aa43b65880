package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/workers/service"
)

// natsURL is the embedded NATS server of the worker the examples talk to.
var natsURL string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cloudbridge-example")
	if err != nil {
		panic(err)
	}
	cfg := config.Defaults()
	cfg.Listen, cfg.DataDir, cfg.HTTPAddr = "127.0.0.1:0", dir, "off"
	w, err := service.Start(context.Background(), cfg, zerolog.Nop())
	if err != nil {
		panic(err)
	}
	natsURL = w.ClientURL()
	if err := seed(); err != nil {
		panic(err)
	}
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = w.Stop(ctx)
	cancel()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// seed stores the README's builtin connection and secret.
func seed() error {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := events.NewClient(nc, "")
	ctx := context.Background()
	conn := events.Connection{Name: "local-bio", Provider: events.ProviderBuiltin, Groups: []string{"bio"}, Secrets: []string{"biodb*"}}
	if err := c.Request(ctx, c.Subjects().Admin(events.ResourceConnections, events.VerbPut), conn, nil); err != nil {
		return err
	}
	put := events.SecretPut{Connection: "local-bio", Name: "biodb01", Value: json.RawMessage(`{"login":"user01","password":"password01"}`)}
	return c.Request(ctx, c.Subjects().Admin(events.ResourceSecrets, events.VerbPut), put, nil)
}

// A service of group bio resolves the credentials of database biodb01.
func ExampleClient_Resolve() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	client := events.NewClient(nc, "") // "" = the default subject prefix, cloudbridge

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := client.Resolve(ctx, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		fmt.Println(err)
		return
	}
	login, _ := reply.String("login")
	password, _ := reply.String("password")
	fmt.Println(login, len(password) > 0)

	// Errors are typed: errors.Is works with the sentinels of the error table.
	_, err = client.Resolve(ctx, "bio", "local-bio", events.ResolveRequest{Secret: "biodb99"})
	fmt.Println(errors.Is(err, events.ErrNotFound), err)
	_, err = client.Resolve(ctx, "chem", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	fmt.Println(errors.Is(err, events.ErrForbidden))
	// Output:
	// user01 true
	// true secret "biodb99": not found
	// true
}

// Test reports each check as a step; a failed check is not an error.
func ExampleClient_Test() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	client := events.NewClient(nc, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	report, err := client.Test(ctx, "bio", "local-bio", events.TestRequest{Secret: "biodb01", Keys: []string{"login", "host"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("ok:", report.OK)
	for _, s := range report.Steps {
		fmt.Println(s.Name, s.OK)
	}
	// Output:
	// ok: false
	// secret true
	// keys false
}

// Replies are sealed by default: the client sends the public half of an
// ephemeral curve key (nkeys xkey) in Cloudbridge-Reply-Key, the worker seals
// the reply body to it and names its own key in Cloudbridge-Sender-Key, and
// the client opens it, checking that it answers this very request and has
// not expired. Anyone else subscribed to the reply inboxes sees ciphertext.
func ExampleClient_sealed() {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	// A snooper on every reply inbox (a deployment without per-user inbox permissions).
	snooper, err := nats.Connect(natsURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer snooper.Close()
	inboxes, _ := snooper.SubscribeSync("_INBOX.>")
	_ = snooper.Flush()

	client := events.NewClient(nc, "")
	fmt.Println("reply key is a curve key:", nkeys.IsValidPublicCurveKey(client.ReplyKey()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := client.Resolve(ctx, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	if err != nil {
		fmt.Println(err)
		return
	}
	password, _ := reply.String("password")
	fmt.Println("client opened:", password == "password01")

	// The snooper's copy of that reply (skipping the worker's own inbox traffic).
	for {
		m, err := inboxes.NextMsg(5 * time.Second)
		if err != nil {
			fmt.Println(err)
			return
		}
		if m.Header.Get(events.HeaderRequestID) == "" {
			continue
		}
		fmt.Println("snooper reads the password:", bytes.Contains(m.Data, []byte("password01")))
		fmt.Println("sealed by the worker's key:", nkeys.IsValidPublicCurveKey(m.Header.Get(events.HeaderSenderKey)))
		break
	}

	// By hand: the sealed plaintext binds the request id, so a captured reply
	// does not open as the answer to another request.
	mine, _ := nkeys.CreateCurveKeys()
	pub, _ := mine.PublicKey()
	req := nats.NewMsg(client.Subjects().Resolve("bio", "local-bio"))
	req.Data = []byte(`{"secret":"biodb01"}`)
	req.Header.Set(events.HeaderRequestID, "req-1")
	req.Header.Set(events.HeaderReplyKey, pub)
	m, err := nc.RequestMsgWithContext(ctx, req)
	if err != nil {
		fmt.Println(err)
		return
	}
	sender := m.Header.Get(events.HeaderSenderKey)
	_, err = events.OpenReply(mine, sender, "req-2", time.Now(), m.Data)
	fmt.Println("replayed into req-2:", errors.Is(err, events.ErrSealedReply))
	body, err := events.OpenReply(mine, sender, "req-1", time.Now(), m.Data)
	fmt.Println("opened as req-1:", err == nil && bytes.Contains(body, []byte(`"login":"user01"`)))
	// Output:
	// reply key is a curve key: true
	// client opened: true
	// snooper reads the password: false
	// sealed by the worker's key: true
	// replayed into req-2: true
	// opened as req-1: true
}
