package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	runtimepprof "runtime/pprof"
)

// startProfiling serves net/http/pprof on addr (a long-running mount is
// profiled live: go tool pprof http://ADDR/debug/pprof/profile), and
// records a CPU profile of the whole command into cpuFile, if set. The
// returned function stops both.
func startProfiling(addr, cpuFile string, log *slog.Logger) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	if cpuFile != "" {
		f, err := os.Create(cpuFile)
		if err != nil {
			return stop, fmt.Errorf("cpu profile: %w", err)
		}
		if err := runtimepprof.StartCPUProfile(f); err != nil {
			f.Close()
			return stop, fmt.Errorf("cpu profile: %w", err)
		}
		stops = append(stops, func() { runtimepprof.StopCPUProfile(); f.Close() })
	}
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			stop()
			return func() {}, fmt.Errorf("pprof: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		srv := &http.Server{Handler: mux}
		go srv.Serve(ln)
		log.Info("serving pprof", "addr", ln.Addr().String())
		stops = append(stops, func() { srv.Close() })
	}
	return stop, nil
}
