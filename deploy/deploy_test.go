package deploy_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cloudbridge/cloudbridge/deploy"
	"github.com/cloudbridge/cloudbridge/internal/config"
)

const repoRoot = ".."

// sampleKeyEnv points compose at the sample key, as a user must point it at
// their own: the compose file has no default.
const sampleKeyEnv = "CLOUDBRIDGE_MASTER_KEY_HOST_FILE=./deploy/master.key.example"

func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "CLOUDBRIDGE_MASTER_KEY_HOST_FILE=") }) {
		env = append(env, sampleKeyEnv)
	}
	p, err := tryLoadCompose(env...)
	if err != nil {
		t.Fatalf("loading docker-compose.yml: %v", err)
	}
	return p
}

func tryLoadCompose(env ...string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "docker-compose.yml")},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithEnv(env), // hermetic: not the developer's environment
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

func TestComposeShape(t *testing.T) {
	p := loadCompose(t)
	nats, err := p.GetService("nats")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := p.GetService("cloudbridge")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("nats runs JetStream with a store and the sample auth config", func(t *testing.T) {
		cmd := strings.Join(nats.Command, " ")
		for _, want := range []string{"-c /etc/nats/nats-server.conf", "-js", "-sd /data"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("nats command %q lacks %q", cmd, want)
			}
		}
		// -m would bind the unauthenticated monitoring port on every interface.
		if strings.Contains(cmd, "-m ") || strings.Contains(cmd, "--http_port") {
			t.Errorf("nats command %q overrides the config's loopback monitoring", cmd)
		}
		if !slices.ContainsFunc(nats.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Target == "/etc/nats/nats-server.conf" && strings.HasSuffix(v.Source, filepath.Join("deploy", "nats-server.conf")) && v.ReadOnly
		}) {
			t.Errorf("deploy/nats-server.conf is not mounted read-only at /etc/nats/nats-server.conf: %+v", nats.Volumes)
		}
		for _, port := range nats.Ports {
			if port.Target == 8222 {
				t.Errorf("the monitoring port is published: %+v", port)
			}
			if port.HostIP != "127.0.0.1" {
				t.Errorf("port %d published beyond loopback: %+v", port.Target, port)
			}
		}
		if !strings.HasPrefix(nats.Image, "nats:2.") {
			t.Errorf("nats image %q", nats.Image)
		}
		if !slices.ContainsFunc(nats.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/data" && v.Type == types.VolumeTypeVolume }) {
			t.Errorf("nats /data is not a named volume: %+v", nats.Volumes)
		}
		if _, ok := p.Volumes["nats-data"]; !ok {
			t.Error("volume nats-data not declared")
		}
	})

	t.Run("nats healthcheck asks for JetStream", func(t *testing.T) {
		hc := nats.HealthCheck
		if hc == nil || len(hc.Test) < 2 {
			t.Fatalf("nats has no healthcheck: %+v", hc)
		}
		test := strings.Join(hc.Test, " ")
		if hc.Test[0] != "CMD" || !strings.Contains(test, "wget") || !strings.Contains(test, ":8222/healthz?js-enabled-only=true") {
			t.Errorf("healthcheck %q does not probe /healthz?js-enabled-only=true on the monitoring port with wget", test)
		}
	})

	t.Run("cloudbridge runs 3 replicas after nats is healthy", func(t *testing.T) {
		if cb.Deploy == nil || cb.Deploy.Replicas == nil || *cb.Deploy.Replicas != 3 {
			t.Errorf("deploy.replicas = %+v, want 3", cb.Deploy)
		}
		dep, ok := cb.DependsOn["nats"]
		if !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("depends_on nats = %+v, want condition service_healthy", dep)
		}
		if len(cb.Ports) != 0 {
			t.Errorf("3 replicas cannot share published host ports: %+v", cb.Ports)
		}
	})

	t.Run("cloudbridge env points at nats and the secret", func(t *testing.T) {
		want := map[string]string{
			"CLOUDBRIDGE_NATS_URL":        "nats://nats:4222",
			"CLOUDBRIDGE_NATS_USER":       "worker",
			"CLOUDBRIDGE_NATS_PASSWORD":   deploy.SampleUsers["worker"],
			"CLOUDBRIDGE_MASTER_KEY_FILE": "/run/secrets/master_key",
			"CLOUDBRIDGE_HTTP_ADDR":       "0.0.0.0:9464",
		}
		for k, v := range want {
			got := cb.Environment[k]
			if got == nil || *got != v {
				t.Errorf("%s = %v, want %q", k, got, v)
			}
		}
		if _, ok := cb.Environment["CLOUDBRIDGE_MASTER_KEY"]; ok {
			t.Error("the master key itself must not be in the environment; use the secret")
		}
	})

	t.Run("master key is a compose secret", func(t *testing.T) {
		if !slices.ContainsFunc(cb.Secrets, func(s types.ServiceSecretConfig) bool {
			return s.Source == "master_key" && (s.Target == "" || s.Target == "master_key" || s.Target == "/run/secrets/master_key")
		}) {
			t.Fatalf("cloudbridge does not mount secret master_key at /run/secrets/master_key: %+v", cb.Secrets)
		}
		sec, ok := p.Secrets["master_key"]
		if !ok || sec.File == "" {
			t.Fatalf("secret master_key has no file: %+v", sec)
		}
		b, err := os.ReadFile(sec.File)
		if err != nil {
			t.Fatalf("secret file: %v", err)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(raw) != 32 {
			t.Errorf("%s is not base64 of 32 bytes (%d bytes, %v)", sec.File, len(raw), err)
		}
	})

	t.Run("there is no fallback master key", func(t *testing.T) {
		_, err := tryLoadCompose()
		if err == nil || !strings.Contains(err.Error(), "CLOUDBRIDGE_MASTER_KEY_HOST_FILE") {
			t.Fatalf("compose without CLOUDBRIDGE_MASTER_KEY_HOST_FILE: %v, want an error naming it", err)
		}
	})

	t.Run("master key file can come from the environment", func(t *testing.T) {
		p := loadCompose(t, "CLOUDBRIDGE_MASTER_KEY_HOST_FILE=/etc/cloudbridge/master.key")
		if got := p.Secrets["master_key"].File; got != "/etc/cloudbridge/master.key" {
			t.Errorf("secret file = %q", got)
		}
	})

	t.Run("cloudbridge is built from deploy/Dockerfile", func(t *testing.T) {
		if cb.Build == nil {
			t.Fatal("cloudbridge has no build section")
		}
		df := cb.Build.Dockerfile
		if !filepath.IsAbs(df) {
			df = filepath.Join(cb.Build.Context, df)
		}
		if _, err := os.Stat(df); err != nil {
			t.Fatalf("Dockerfile %s: %v", df, err)
		}
		if abs, _ := filepath.Abs(filepath.Join(repoRoot, "deploy", "Dockerfile")); df != abs {
			t.Errorf("Dockerfile is %s, want deploy/Dockerfile", df)
		}
		final := parseDockerfile(t, df).final()
		if !final.nonRoot() {
			t.Errorf("final stage %q runs as root (USER %q)", final.from, final.user)
		}
		if len(cb.Command) != 0 && cb.Command[0] != "serve" {
			t.Errorf("command %v does not run serve", cb.Command)
		}
		if cb.User != "" && !nonRootUser(cb.User) {
			t.Errorf("compose overrides the user with %q", cb.User)
		}
	})
}

type stage struct {
	from, name string
	user       string
	lines      []string // instructions after FROM, continuations joined
}

func (s stage) nonRoot() bool { return nonRootUser(s.user) }

func nonRootUser(u string) bool {
	name, _, _ := strings.Cut(u, ":")
	return name != "" && name != "root" && name != "0"
}

type dockerfile []stage

func (d dockerfile) final() stage { return d[len(d)-1] }

// parseDockerfile splits a Dockerfile into stages, joining continued lines
// and dropping comments.
func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d dockerfile
	var cont strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cont.Len() == 0) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cont.WriteString(line)
		full := cont.String()
		cont.Reset()
		fields := strings.Fields(full)
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			st := stage{from: fields[1]}
			if len(fields) >= 4 && strings.EqualFold(fields[2], "AS") {
				st.name = fields[3]
			}
			d = append(d, st)
		default:
			if len(d) == 0 {
				t.Fatalf("%s: instruction before FROM: %q", path, full)
			}
			if strings.EqualFold(fields[0], "USER") && len(fields) > 1 {
				d[len(d)-1].user = fields[1]
			}
			d[len(d)-1].lines = append(d[len(d)-1].lines, full)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(d) == 0 {
		t.Fatalf("%s has no FROM", path)
	}
	return d
}

func TestDockerfileIsMultiStageStaticNonRoot(t *testing.T) {
	d := parseDockerfile(t, filepath.Join(repoRoot, "deploy", "Dockerfile"))
	if len(d) < 2 {
		t.Fatalf("%d stage(s), want a multi-stage build", len(d))
	}
	build := d[0]
	if !strings.HasPrefix(build.from, "golang:1.26") || build.name == "" {
		t.Errorf("builder stage is FROM %q AS %q, want golang:1.26 AS <name>", build.from, build.name)
	}
	text := strings.Join(build.lines, "\n")
	cgoOff := regexp.MustCompile(`(?m)^(ENV|ARG)\s+CGO_ENABLED=0\b|CGO_ENABLED=0\s+go build`)
	if !cgoOff.MatchString(text) {
		t.Error("builder does not set CGO_ENABLED=0")
	}
	goBuild := ""
	for _, l := range build.lines {
		if strings.Contains(l, "go build") {
			goBuild = l
		}
	}
	for _, want := range []string{"-trimpath", `-ldflags="-s -w `, "-X github.com/cloudbridge/cloudbridge/internal/version.build=${VERSION}", "./cmd/cloudbridge"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("go build %q lacks %s", goBuild, want)
		}
	}
	// The version the image reports comes from the build argument.
	if !strings.Contains(text, "\nARG VERSION=") || strings.Index(text, "ARG VERSION=") > strings.Index(text, "go build") {
		t.Error("the build stage does not declare ARG VERSION before go build")
	}
	if strings.Index(text, "CGO_ENABLED=0") > strings.Index(text, "go build") {
		t.Error("CGO_ENABLED=0 is set after go build")
	}

	final := d.final()
	if final.from != "scratch" && !strings.HasPrefix(final.from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %q, want distroless/static or scratch", final.from)
	}
	if !final.nonRoot() {
		t.Errorf("final stage USER %q is root or unset", final.user)
	}
	ftext := strings.Join(final.lines, "\n")
	if !regexp.MustCompile(`(?m)^COPY --from=` + regexp.QuoteMeta(build.name) + `\s+\S+\s+/cloudbridge$`).MatchString(ftext) {
		t.Errorf("final stage does not copy the binary from %s to /cloudbridge:\n%s", build.name, ftext)
	}
	for _, want := range []string{`ENTRYPOINT ["/cloudbridge"]`, `CMD ["serve"]`} {
		if !strings.Contains(ftext, want) {
			t.Errorf("final stage lacks %s", want)
		}
	}
	if strings.Contains(ftext, "HEALTHCHECK CMD") {
		t.Error("distroless has no shell or wget: a HEALTHCHECK cannot run there, probe /readyz instead")
	}
}

func TestDockerignoreKeepsSecretsAndStateOut(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for _, want := range []string{".git", "**/data", "**/*.key"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore lacks %q", want)
		}
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "*.go", "**/*.go", "schemas"} {
		if slices.Contains(lines, needed) {
			t.Errorf(".dockerignore excludes %q, which the build needs", needed)
		}
	}
}

// TestDeployEnvIsKnownToTheBinary checks every CLOUDBRIDGE_* variable set by
// the compose file and the Dockerfile against the env twins of the binary's
// flags, so a typo cannot silently fall back to a default.
func TestDeployEnvIsKnownToTheBinary(t *testing.T) {
	srcs, _ := filepath.Glob(filepath.Join(repoRoot, "internal", "config", "*.go"))
	known := map[string]bool{}
	tag := regexp.MustCompile(`env:"(CLOUDBRIDGE_[A-Z0-9_]+)"`)
	for _, src := range srcs {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tag.FindAllStringSubmatch(string(b), -1) {
			known[m[1]] = true
		}
	}
	if len(known) == 0 {
		t.Skip("no env twins found in internal/config")
	}
	p := loadCompose(t)
	cb, err := p.GetService("cloudbridge")
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	for k := range cb.Environment {
		used = append(used, k)
	}
	df, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^ENV\s+(CLOUDBRIDGE_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(df), -1) {
		used = append(used, m[1])
	}
	if len(used) == 0 {
		t.Fatal("no CLOUDBRIDGE_ variables found")
	}
	for _, k := range used {
		if strings.HasPrefix(k, "CLOUDBRIDGE_") && !known[k] {
			t.Errorf("%s is not the env twin of any flag", k)
		}
	}
}

// The compose file: workers health-checked by the binary (distroless has no
// shell), resource limits, a stop grace period longer than the shutdown
// timeout, images pinned to the versions the tests use.
func TestComposeOperations(t *testing.T) {
	p := loadCompose(t)
	nats, err := p.GetService("nats")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := p.GetService("cloudbridge")
	if err != nil {
		t.Fatal(err)
	}
	hc := cb.HealthCheck
	if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/cloudbridge" || hc.Test[2] != "health" {
		t.Errorf("cloudbridge healthcheck %+v, want [CMD /cloudbridge health ...]", hc)
	}
	for _, svc := range []types.ServiceConfig{nats, cb} {
		if svc.Deploy == nil || svc.Deploy.Resources.Limits == nil || svc.Deploy.Resources.Limits.MemoryBytes == 0 || svc.Deploy.Resources.Limits.NanoCPUs == 0 {
			t.Errorf("%s has no cpu and memory limits: %+v", svc.Name, svc.Deploy)
		}
	}
	var env string
	if v := cb.Environment["CLOUDBRIDGE_SHUTDOWN_TIMEOUT"]; v != nil {
		env = *v
	}
	shutdown, err := time.ParseDuration(env)
	if err != nil {
		shutdown = config.Defaults().ShutdownTimeout
	}
	if cb.StopGracePeriod == nil || time.Duration(*cb.StopGracePeriod) <= shutdown {
		t.Errorf("stop_grace_period %v is not longer than the shutdown timeout %s", cb.StopGracePeriod, shutdown)
	}
	// nats pinned to the nats-server of go.mod.
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v(\d+\.\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("no nats-server in go.mod")
	}
	if want := "nats:" + string(m[1]); !strings.HasPrefix(nats.Image, want) {
		t.Errorf("nats image %q, want %s (what the tests run)", nats.Image, want)
	}
	// The Go builder pinned to a patch release of go.mod's Go.
	df, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^FROM golang:1\.26\.\d+ AS build`).Match(df) {
		t.Error("the Dockerfile's Go builder is not pinned to a 1.26.x release")
	}
}
