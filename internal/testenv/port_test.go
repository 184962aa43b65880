package testenv

import (
	"net"
	"strconv"
	"testing"
)

// The ports FreePort gives are distinct, bindable and below the ephemeral
// range (so no outgoing connection's source port can take one while the
// server it is meant for is down).
func TestFreePortOutsideTheEphemeralRange(t *testing.T) {
	eph := ephemeralStart()
	seen := map[int]bool{}
	for range 500 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
		if eph-lowestPort >= 1000 && (p < lowestPort || p >= eph) {
			t.Fatalf("port %d outside [%d, %d)", p, lowestPort, eph)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
	// An outgoing connection's source port is in the ephemeral range.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if src := c.LocalAddr().(*net.TCPAddr).Port; eph-lowestPort >= 1000 && src < eph {
		t.Logf("source port %d below the ephemeral start %d (range read wrongly?)", src, eph)
		t.Fail()
	}
}
