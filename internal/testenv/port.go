package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Ports below the kernel's ephemeral range are never taken by the source
// port of an outgoing connection. A port from net.Listen(":0") is in that
// range: between the picker closing it and a nats-server binding it (or
// while a killed node is down before its restart on the same port), a route
// or client connection of any process may take it as its source port, and
// the server dies with "bind: address already in use". So FreePort picks
// from [lowestPort, the ephemeral range's start), never hands out a port
// twice in one process, and checks each by binding it.
const lowestPort = 20000

var ports struct {
	mu     sync.Mutex
	given  map[int]bool
	lo, hi int // [lo, hi): the range to pick from; hi == 0 until read
}

// ephemeralStart is where the kernel's ephemeral range starts (Linux;
// 32768, the Linux default, elsewhere or when it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// FreePort returns a loopback TCP port that is free now, is outside the
// ephemeral range (when the range leaves room below it) and was not
// returned before in this process.
func FreePort() (int, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.hi == 0 {
		ports.given = map[int]bool{}
		ports.lo, ports.hi = lowestPort, ephemeralStart()
	}
	if ports.hi-ports.lo >= 1000 {
		for range 200 {
			p := ports.lo + rand.IntN(ports.hi-ports.lo)
			if ports.given[p] {
				continue
			}
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				continue
			}
			l.Close()
			ports.given[p] = true
			return p, nil
		}
	}
	// No room below the ephemeral range (or no free port found there): let
	// the kernel choose.
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !ports.given[p] {
			ports.given[p] = true
			return p, nil
		}
	}
	return 0, fmt.Errorf("finding a free port: none left that was not given out")
}

// MustFreePort is FreePort for tests: it fails t when there is none.
func MustFreePort(t TB) int {
	t.Helper()
	p, err := FreePort()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return p
}
