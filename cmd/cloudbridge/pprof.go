package main

import (
	"net"
	"net/http"
	"net/http/pprof"
	"os"

	"github.com/rs/zerolog"
)

// pprofEnv, when set to a listen address (e.g. 127.0.0.1:0), makes serve
// answer Go's /debug/pprof/ endpoints there: for profiling a worker under a
// benchmark (internal/registry's BenchmarkRegistryAtScale). Off unless set;
// never on the monitoring address.
const pprofEnv = "CLOUDBRIDGE_PPROF_ADDR"

// startPprof serves /debug/pprof/ on the address pprofEnv names, if any,
// and logs the address it listens on ("pprof listening", addr).
func startPprof(log zerolog.Logger) error {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Warn().Str("addr", ln.Addr().String()).Msg("pprof listening (" + pprofEnv + ")")
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}
