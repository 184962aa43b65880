package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
)

// healthCmd probes a worker's /readyz: the container health check of an
// image without a shell.
type healthCmd struct {
	HTTPAddr string `name:"http-addr" env:"CLOUDBRIDGE_HTTP_ADDR" default:"127.0.0.1:9464" help:"The worker's --http-addr; a wildcard host (0.0.0.0, ::) is probed on loopback."`
	Path     string `name:"path" default:"/readyz" enum:"/readyz,/healthz" help:"/readyz (ready to serve) or /healthz (alive)."`
}

func (c *healthCmd) Run(e *env) error {
	host, port, err := net.SplitHostPort(c.HTTPAddr)
	if err != nil {
		return usageError{fmt.Errorf("--http-addr %q: want host:port", c.HTTPAddr)}
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + c.Path
	ctx, cancel := context.WithTimeout(e.ctx, e.f.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The client's error repeats the method and URL ("Get \"http://…\": …"):
		// say it once, and what to check.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no answer within --timeout %s", url, e.f.Timeout)
		}
		return fmt.Errorf("%s: %v (is a worker running with --http-addr %s?)", url, err, c.HTTPAddr)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if e.f.JSON {
		return printJSON(e.stdout, map[string]any{"url": url, "status": resp.StatusCode, "body": strings.TrimSpace(string(body))})
	}
	_, err = fmt.Fprintf(e.stdout, "%s: %s\n", url, orDash(strings.TrimSpace(string(body))))
	return err
}
