package service

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMonitoringEndpoints(t *testing.T) {
	srv := natstest.Server(t)
	w := startWorker(t, joinedConfig(srv.ClientURL(), newMasterKey(t)))
	_, c := connect(t, srv.ClientURL())
	walkthrough(t, c)
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveReq(c, "bio", "local-bio", events.ResolveRequest{Secret: "biodb01"}); err != nil {
		t.Fatal(err)
	}
	_, _ = resolveReq(c, "chem", "local-bio", events.ResolveRequest{Secret: "biodb01"})
	base := "http://" + w.HTTPAddr()
	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	code, metrics := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`cloudbridge_requests_total{code="ok",endpoint="resolve"}`,
		`cloudbridge_requests_total{code="forbidden",endpoint="resolve"}`,
		`cloudbridge_request_duration_seconds_bucket{endpoint="resolve"`,
		`cloudbridge_cache_total{result="hit"}`,
		`cloudbridge_cache_total{result="miss"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, "password01") {
		t.Fatal("/metrics leaks a secret")
	}
	// Not ready once NATS is gone.
	srv.Shutdown()
	natstest.Eventually(t, 5*time.Second, "/readyz to fail without NATS", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable
	})
}

// Stop finishes the requests in flight before it drains and returns.
func TestStopFinishesRequestsInFlight(t *testing.T) {
	srv := natstest.Server(t)
	cloud := &fakeCloud{gate: make(chan struct{})}
	cfg := joinedConfig(srv.ClientURL(), newMasterKey(t))
	cfg.RequestTimeout = 10 * time.Second
	w := startWorker(t, cfg, WithProvider(events.ProviderAWS, cloud.factory))
	_, c := connect(t, srv.ClientURL())
	adminReq(t, c, events.ResourceConnections, events.VerbPut, events.Connection{Name: "cloud", Provider: events.ProviderAWS,
		Groups: []string{"bio"}, Secrets: []string{"*"}, AWS: &events.AWSConfig{Region: "us-east-1", Auth: events.AWSAuthDefault}}, nil)
	type result struct {
		reply *events.ResolveReply
		err   error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := c.Resolve(ctx, "bio", "cloud", events.ResolveRequest{Secret: "db"})
		done <- result{r, err}
	}()
	natstest.Eventually(t, 5*time.Second, "the request to reach the provider", func() bool { return cloud.calls.Load() == 1 })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- w.Stop(ctx)
	}()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	cloud.mu.Lock()
	close(cloud.gate)
	cloud.gate = nil
	cloud.mu.Unlock()
	r := <-done
	if r.err != nil || r.reply == nil {
		t.Fatalf("the request in flight got %v", r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// After Stop, nobody answers.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Resolve(ctx, "bio", "cloud", events.ResolveRequest{Secret: "db"}); err == nil {
		t.Fatal("a stopped worker answered")
	}
}
