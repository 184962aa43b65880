package monitor

import (
	"net"
	"strings"
	"testing"
)

// TestStartOnABusyAddress: a taken --http-addr (a second worker on one
// machine, with the default 127.0.0.1:9464) is an error that names the flag
// and how to fix it.
func TestStartOnABusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := Start(ln.Addr().String(), func() error { return nil })
	if err == nil {
		_ = s.srv.Close()
		t.Fatal("Start on a busy address: no error")
	}
	msg := err.Error()
	for _, want := range []string{"--http-addr " + ln.Addr().String(), "address already in use", "Pass a free --http-addr address, or --http-addr off"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "listen tcp") {
		t.Errorf("error %q repeats the address", msg)
	}
}
