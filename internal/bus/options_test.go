package bus

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A clean close is not logged as a warning "reconnecting".
func TestCleanCloseIsNotAWarning(t *testing.T) {
	srv := natstest.Server(t)
	var logs syncBuf
	log := zerolog.New(&logs)
	nc, err := nats.Connect(srv.ClientURL(), Resilient("test", log)...)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	natstest.Eventually(t, 5*time.Second, "closed logged", func() bool { return strings.Contains(logs.String(), "nats connection closed") })
	if strings.Contains(logs.String(), "reconnecting") || strings.Contains(logs.String(), `"level":"warn"`) {
		t.Fatalf("clean close logged as a fault:\n%s", logs.String())
	}
}
