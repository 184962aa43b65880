// Package config holds the configuration of `cloudbridge serve` and of the
// CLI's NATS connection. Every flag has an env twin CLOUDBRIDGE_<FLAG>; the
// struct tags are read by the CLI parser (kong).
package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/bus"
	"github.com/cloudbridge/cloudbridge/internal/provider"
)

// DefaultListen is the embedded NATS server's default client address. It is
// deliberately not NATS's standard 4222: users often run a NATS server there
// already. DefaultCLIURL, the CLI's default URL, follows it.
const (
	DefaultListen = "127.0.0.1:4333"
	DefaultCLIURL = "nats://" + DefaultListen
)

// Vars are the values interpolated into the struct tags below (kong.Vars).
func Vars() map[string]string {
	return map[string]string{"default_listen": DefaultListen, "default_cli_url": DefaultCLIURL}
}

// CLIURL is the URL a CLI verb connects to: the flag or CLOUDBRIDGE_NATS_URL
// (already in n.URL), else NATS_URL (as the nats CLI reads it), else
// DefaultCLIURL. serve does not read NATS_URL: without a URL it starts the
// embedded server.
func (n NATS) CLIURL(getenv func(string) string) string {
	if n.URL != "" {
		return n.URL
	}
	if u := getenv("NATS_URL"); u != "" {
		return u
	}
	return DefaultCLIURL
}

// NATS is how to reach NATS, shared by serve and the CLI verbs.
type NATS struct {
	URL      string `name:"nats-url" env:"CLOUDBRIDGE_NATS_URL" help:"NATS server URL(s), comma-separated. serve: without it, an embedded NATS server is started. CLI verbs: --nats-url, else CLOUDBRIDGE_NATS_URL, else NATS_URL, else ${default_cli_url}." placeholder:"URL"`
	User     string `name:"nats-user" env:"CLOUDBRIDGE_NATS_USER" help:"NATS user name."`
	Password string `name:"nats-password" env:"CLOUDBRIDGE_NATS_PASSWORD" help:"NATS password (prefer the env twin)."`
	Token    string `name:"nats-token" env:"CLOUDBRIDGE_NATS_TOKEN" help:"NATS auth token (prefer the env twin)."`
	NKey     string `name:"nats-nkey" env:"CLOUDBRIDGE_NATS_NKEY" help:"Path of an NKey seed file." type:"path"`
	Creds    string `name:"nats-creds" env:"CLOUDBRIDGE_NATS_CREDS" help:"Path of a NATS .creds file (JWT + seed)." type:"path"`
	TLSCA    string `name:"nats-tls-ca" env:"CLOUDBRIDGE_NATS_TLS_CA" help:"CA certificate to verify the NATS server." type:"path"`
	TLSCert  string `name:"nats-tls-cert" env:"CLOUDBRIDGE_NATS_TLS_CERT" help:"Client certificate for mutual TLS." type:"path"`
	TLSKey   string `name:"nats-tls-key" env:"CLOUDBRIDGE_NATS_TLS_KEY" help:"Client key for mutual TLS." type:"path"`
	Prefix   string `name:"prefix" env:"CLOUDBRIDGE_PREFIX" default:"cloudbridge" help:"Subject prefix of every cloudbridge subject."`
}

// Auth is the connection's auth as bus options.
func (n NATS) Auth() bus.Auth {
	return bus.Auth{User: n.User, Password: n.Password, Token: n.Token, NKeySeed: n.NKey, Creds: n.Creds,
		TLSCA: n.TLSCA, TLSCert: n.TLSCert, TLSKey: n.TLSKey}
}

// Validate checks the NATS options. An empty prefix is the default one.
func (n NATS) Validate() error {
	if n.Prefix == "" {
		return n.Auth().Validate()
	}
	if err := events.CheckPrefix(n.Prefix); err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	return n.Auth().Validate()
}

// Serve configures `cloudbridge serve`.
type Serve struct {
	NATS `kong:"-"` // the global NATS flags of the CLI, copied in by serve

	Listen  string `name:"listen" env:"CLOUDBRIDGE_LISTEN" default:"${default_listen}" help:"Embedded NATS: client listen address (only without --nats-url). Not NATS's usual 4222, so it does not collide with a NATS server already running."`
	DataDir string `name:"data-dir" env:"CLOUDBRIDGE_DATA_DIR" default:"./data" help:"Embedded NATS: JetStream store and generated master key (only without --nats-url)." type:"path"`

	MasterKeyFile         string `name:"master-key-file" env:"CLOUDBRIDGE_MASTER_KEY_FILE" help:"File holding the master key (base64 of 32 bytes) that seals stored credentials." type:"path"`
	MasterKey             string `name:"master-key" env:"CLOUDBRIDGE_MASTER_KEY" help:"The master key itself, base64 of 32 bytes (prefer the env twin or --master-key-file)."`
	PreviousMasterKeyFile string `name:"previous-master-key-file" env:"CLOUDBRIDGE_PREVIOUS_MASTER_KEY_FILE" help:"An old master key that may still have sealed records; run 'cloudbridge admin rekey' to re-seal them." type:"path"`

	AllowEndpoints []string `name:"allow-endpoints" env:"CLOUDBRIDGE_ALLOW_ENDPOINTS" default:"*.amazonaws.com,*.amazonaws.com.cn,*.googleapis.com" help:"Hosts a connection may send credentials to (endpoint overrides, a key's token_uri), comma-separated: '*' matches any run of characters, a pattern without a port matches any port." placeholder:"HOSTS"`

	HTTPAddr  string `name:"http-addr" env:"CLOUDBRIDGE_HTTP_ADDR" default:"127.0.0.1:9464" help:"Address of /metrics, /healthz and /readyz; 'off' disables."`
	LogLevel  string `name:"log-level" env:"CLOUDBRIDGE_LOG_LEVEL" default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn, error."`
	LogFormat string `name:"log-format" env:"CLOUDBRIDGE_LOG_FORMAT" default:"json" enum:"json,console" help:"Log format: json or console."`

	RequestTimeout  time.Duration `name:"request-timeout" env:"CLOUDBRIDGE_REQUEST_TIMEOUT" default:"8s" help:"Deadline of one request, upstream calls included."`
	CacheMaxEntries int           `name:"cache-max-entries" env:"CLOUDBRIDGE_CACHE_MAX_ENTRIES" default:"10000" help:"Bound of the per-worker secret cache (LRU)."`
	MaxInFlight     int           `name:"max-in-flight" env:"CLOUDBRIDGE_MAX_IN_FLIGHT" default:"1024" help:"Requests handled at once per admin endpoint; more fail at once with throttled (resolve, test and token are bounded per connection by its limits)."`
	KVReplicas      int           `name:"kv-replicas" env:"CLOUDBRIDGE_KV_REPLICAS" default:"1" help:"Replicas of the KV buckets and streams when created (clustered NATS)."`
	MemoryLimit     string        `name:"memory-limit" env:"CLOUDBRIDGE_MEMORY_LIMIT" default:"auto" help:"Soft memory limit of the worker's Go runtime, e.g. 512MiB (the garbage collector works harder near it; it never refuses memory): auto = GOMEMLIMIT when set, else 90% of the cgroup's memory limit when there is one, else none; off = none."`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" env:"CLOUDBRIDGE_SHUTDOWN_TIMEOUT" default:"30s" help:"How long shutdown may take to finish requests and flush batches."`

	Audit          string        `name:"audit" env:"CLOUDBRIDGE_AUDIT" default:"best-effort" enum:"best-effort,required" help:"Audit events of requests: best-effort (an event that cannot be stored is counted in cloudbridge_audit_dropped_total) or required (a request whose event cannot be stored is refused with unavailable)."`
	AuditRetention time.Duration `name:"audit-retention" env:"CLOUDBRIDGE_AUDIT_RETENTION" default:"2160h" help:"Retention of the audit stream by age (default 90 days; 0 = unlimited)."`

	LogsSubjects []string      `name:"logs-subjects" env:"CLOUDBRIDGE_LOGS_SUBJECTS" default:"logs.>" help:"Subjects captured by the CLOUDBRIDGE_LOGS stream (comma-separated)."`
	LogsStream   string        `name:"logs-stream" env:"CLOUDBRIDGE_LOGS_STREAM" help:"Bind this existing stream for log export instead of creating CLOUDBRIDGE_LOGS."`
	LogsMaxAge   time.Duration `name:"logs-max-age" env:"CLOUDBRIDGE_LOGS_MAX_AGE" default:"168h" help:"Retention of the logs stream by age (0 = unlimited)."`
	LogsMaxBytes int64         `name:"logs-max-bytes" env:"CLOUDBRIDGE_LOGS_MAX_BYTES" default:"0" help:"Retention of the logs stream by size in bytes (0 = unlimited)."`
}

// Embedded reports whether serve starts its own NATS server.
func (s *Serve) Embedded() bool { return s.URL == "" }

// Validate checks the configuration.
func (s *Serve) Validate() error {
	if err := s.NATS.Validate(); err != nil {
		return err
	}
	if s.Embedded() {
		if _, _, err := net.SplitHostPort(s.Listen); err != nil {
			return fmt.Errorf("--listen %q: want host:port", s.Listen)
		}
		if s.DataDir == "" {
			return errors.New("--data-dir: required with the embedded NATS server")
		}
	}
	if s.MasterKeyFile != "" && s.MasterKey != "" {
		return errors.New("--master-key-file and --master-key (CLOUDBRIDGE_MASTER_KEY) are alternatives: give one")
	}
	if !s.Embedded() && s.MasterKeyFile == "" && s.MasterKey == "" {
		return errors.New("a master key is required with --nats-url: pass --master-key-file or set CLOUDBRIDGE_MASTER_KEY (make one with: head -c 32 /dev/urandom | base64)")
	}
	if _, err := s.Allowlist(); err != nil {
		return err
	}
	if s.HTTPAddr != "off" {
		if _, _, err := net.SplitHostPort(s.HTTPAddr); err != nil {
			return fmt.Errorf("--http-addr %q: want host:port or off", s.HTTPAddr)
		}
	}
	if s.RequestTimeout < 100*time.Millisecond || s.RequestTimeout > 5*time.Minute {
		return fmt.Errorf("--request-timeout %s: between 100ms and 5m", s.RequestTimeout)
	}
	if s.CacheMaxEntries < 1 {
		return errors.New("--cache-max-entries: at least 1")
	}
	if s.MaxInFlight < 1 {
		return errors.New("--max-in-flight: at least 1")
	}
	if s.KVReplicas < 1 || s.KVReplicas > 5 {
		return errors.New("--kv-replicas: 1 to 5")
	}
	if _, err := ParseMemoryLimit(s.MemoryLimit); err != nil {
		return err
	}
	if s.ShutdownTimeout <= 0 {
		return errors.New("--shutdown-timeout: must be positive")
	}
	if len(s.LogsSubjects) == 0 && s.LogsStream == "" {
		return errors.New("--logs-subjects: at least one subject")
	}
	for i, subj := range s.LogsSubjects {
		if err := events.CheckSubjectFilter("--logs-subjects", subj); err != nil {
			return err
		}
		// By collision, not by prefix: "*.>" or "*.v1.>" would capture the
		// requests and the audit stream's subjects too.
		if events.SubjectsCollide(subj, s.Prefix+".>") {
			return fmt.Errorf("--logs-subjects %q overlaps cloudbridge's own subjects (%s.>)", subj, s.Prefix)
		}
		// NATS's own subjects ($JS.API, $KV, ...) and the reply inboxes
		// (every reply, values included, would be stored and exported).
		for _, own := range []string{"$JS.>", "$KV.>", "$SYS.>", "$SRV.>", "$O.>", "_INBOX.>"} {
			if events.SubjectsCollide(subj, own) {
				return fmt.Errorf("--logs-subjects %q overlaps NATS's own subjects (%s)", subj, own)
			}
		}
		// JetStream refuses a stream whose subjects overlap (and start-up
		// would retry it forever).
		for _, prev := range s.LogsSubjects[:i] {
			if events.SubjectsCollide(prev, subj) {
				return fmt.Errorf("--logs-subjects %q and %q overlap: give the wider one only", prev, subj)
			}
		}
	}
	switch s.Audit {
	case "", "best-effort", "required":
	default:
		return fmt.Errorf("--audit %q: best-effort or required", s.Audit)
	}
	if s.AuditRetention < 0 {
		return errors.New("--audit-retention: not negative")
	}
	if s.LogsMaxAge < 0 || s.LogsMaxBytes < 0 {
		return errors.New("--logs-max-age, --logs-max-bytes: not negative")
	}
	return nil
}

// Allowlist is --allow-endpoints parsed.
func (s *Serve) Allowlist() (provider.Allowlist, error) {
	a, err := provider.ParseAllowlist(s.AllowEndpoints)
	if err != nil {
		return provider.Allowlist{}, fmt.Errorf("--allow-endpoints: %w", err)
	}
	return a, nil
}

// Defaults returns the serve configuration with every flag at its default,
// for running a worker from code (tests, embedding). The CLI's defaults come
// from the struct tags above; a test keeps the two equal.
func Defaults() Serve {
	return Serve{
		NATS:            NATS{Prefix: events.DefaultPrefix},
		Listen:          DefaultListen,
		DataDir:         "./data",
		AllowEndpoints:  append([]string(nil), provider.DefaultAllowEndpoints...),
		HTTPAddr:        "127.0.0.1:9464",
		LogLevel:        "info",
		LogFormat:       "json",
		RequestTimeout:  8 * time.Second,
		CacheMaxEntries: 10000,
		MaxInFlight:     1024,
		KVReplicas:      1,
		MemoryLimit:     "auto",
		ShutdownTimeout: 30 * time.Second,
		LogsSubjects:    []string{"logs.>"},
		LogsMaxAge:      168 * time.Hour,
		Audit:           "best-effort",
		AuditRetention:  90 * 24 * time.Hour,
	}
}

// ParseMemoryLimit reads --memory-limit: a size in bytes with an optional
// unit (B, KiB, MiB, GiB, TiB; KB, MB, GB, TB), or auto (-1) or off (0).
func ParseMemoryLimit(v string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "auto":
		return -1, nil
	case "off":
		return 0, nil
	}
	s := strings.TrimSpace(v)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	units := map[string]int64{"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
	mult, ok := units[strings.ToLower(strings.TrimSpace(s[i:]))]
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if i == 0 || !ok || err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("--memory-limit %q: want a size such as 512MiB or 2GiB, auto or off", v)
	}
	return n * mult, nil
}
