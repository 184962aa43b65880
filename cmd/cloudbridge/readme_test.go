package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/config"
	"github.com/cloudbridge/cloudbridge/internal/testenv/natstest"
)

// readmeBlocks returns the ```sh blocks of the README section with the
// given heading, as lines.
func readmeBlocks(t *testing.T, heading string) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	text = text[i+len(heading)+2:]
	if j := strings.Index(text, "\n## "); j >= 0 {
		text = text[:j]
	}
	var blocks [][]string
	for {
		s := strings.Index(text, "```sh\n")
		if s < 0 {
			return blocks
		}
		text = text[s+6:]
		e := strings.Index(text, "```")
		blocks = append(blocks, strings.Split(strings.TrimRight(text[:e], "\n"), "\n"))
		text = text[e+3:]
	}
}

// shellWords splits a README command line: words, 'single quotes', a
// trailing # comment and & dropped.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == '#' && !inWord:
			return finish(words, &cur, inWord)
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	return finish(words, &cur, inWord)
}

func finish(words []string, cur *strings.Builder, inWord bool) []string {
	if inWord {
		words = append(words, cur.String())
	}
	if n := len(words); n > 0 && words[n-1] == "&" {
		words = words[:n-1]
	}
	return words
}

func TestShellWords(t *testing.T) {
	got := shellWords(`nats req a.b '{"secret":"x y"}'   # comment`)
	if strings.Join(got, "|") != `nats|req|a.b|{"secret":"x y"}` {
		t.Fatalf("%q", got)
	}
	if got := shellWords("cloudbridge serve &   # or"); strings.Join(got, "|") != "cloudbridge|serve" {
		t.Fatalf("%q", got)
	}
}

// The embedded server's default is not NATS's standard port, and the CLI's
// default URL follows it.
func TestDefaultsAvoidPort4222(t *testing.T) {
	_, port, err := net.SplitHostPort(config.DefaultListen)
	if err != nil || port == "4222" {
		t.Fatalf("default listen %q", config.DefaultListen)
	}
	if config.Defaults().Listen != config.DefaultListen || config.DefaultCLIURL != "nats://"+config.DefaultListen {
		t.Fatal("the CLI's default URL does not follow the embedded server's address")
	}
	for _, tc := range []struct{ flag, cb, natsURL, want string }{
		{"nats://flag:1", "nats://cb:1", "nats://env:1", "nats://flag:1"},
		{"", "nats://cb:1", "nats://env:1", "nats://cb:1"},
		{"", "", "nats://env:1", "nats://env:1"},
		{"", "", "", config.DefaultCLIURL},
	} {
		t.Setenv("CLOUDBRIDGE_NATS_URL", tc.cb)
		t.Setenv("NATS_URL", tc.natsURL)
		var c cli
		p := mustParser(t, &c)
		args := []string{"conn", "ls"}
		if tc.flag != "" {
			args = append(args, "--nats-url", tc.flag)
		}
		if _, err := p.Parse(args); err != nil {
			t.Fatal(err)
		}
		if got := c.CLIURL(os.Getenv); got != tc.want {
			t.Errorf("flag %q CLOUDBRIDGE_NATS_URL %q NATS_URL %q: URL %q, want %q", tc.flag, tc.cb, tc.natsURL, got, tc.want)
		}
	}
}

// The README's set-up command, run as a process where another NATS server
// holds the port that stands in for 4222, then the walkthrough and the
// `nats req` examples as written, with one `export NATS_URL=...`.
func TestReadmeSetUpAndWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	for _, k := range os.Environ() {
		if strings.HasPrefix(k, "CLOUDBRIDGE_") || strings.HasPrefix(k, "NATS_") {
			name := strings.SplitN(k, "=", 2)[0]
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	// Someone else's NATS, on the port standing in for 4222.
	other := natstest.Server(t)
	otherNC := natstest.Connect(t, other)

	setup := readmeBlocks(t, "## Set up")
	serveLine := shellWords(setup[0][0])
	if len(serveLine) < 4 || strings.Join(serveLine[:3], " ") != "go run ./cmd/cloudbridge" || serveLine[3] != "serve" {
		t.Fatalf("README's first set-up command is %q, want go run ./cmd/cloudbridge serve", setup[0][0])
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cloudbridge")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	// A free port stands in for the default 4333 (tests run in parallel on
	// one machine); everything else is the README's command as written.
	listen := freeAddr(t)
	baseEnv := append(os.Environ(), "CLOUDBRIDGE_LISTEN="+listen, "CLOUDBRIDGE_HTTP_ADDR="+freeAddr(t))
	var logs bytes.Buffer
	serve := exec.Command(bin, serveLine[3:]...)
	serve.Dir, serve.Env, serve.Stderr = work, baseEnv, &lockedWriter{w: &logs}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill(); _ = serve.Wait() })

	env := append([]string{}, os.Environ()...)
	runCBIn := func(args []string, stdin string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = work, env
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	runCB := func(args []string) (string, int) { return runCBIn(args, "") }
	var natsURL string
	var nc *nats.Conn
	waitReady := func() {
		natstest.Eventually(t, 30*time.Second, "serve up", func() bool {
			_, code := runCB([]string{"conn", "ls", "--timeout", "1s"})
			return code == 0
		})
	}
	blocks := readmeBlocks(t, "## Walkthrough: the biodb01 story")
	if len(blocks) < 2 {
		t.Fatalf("walkthrough has %d sh blocks", len(blocks))
	}
	ran := 0
	for _, block := range blocks {
		for i := 0; i < len(block); i++ {
			w := shellWords(block[i])
			if len(w) == 0 {
				continue
			}
			switch {
			case w[0] == "export":
				k, v, _ := strings.Cut(w[1], "=")
				if k != "NATS_URL" || v != config.DefaultCLIURL {
					t.Fatalf("README exports %s=%s, want NATS_URL=%s", k, v, config.DefaultCLIURL)
				}
				natsURL = "nats://" + listen
				env = append(env, "NATS_URL="+natsURL)
				waitReady()
				var err error
				if nc, err = nats.Connect(natsURL); err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
			case w[0] == "cat" && len(w) == 4 && w[1] == ">":
				var body []string
				for i++; block[i] != "EOF"; i++ {
					body = append(body, block[i])
				}
				if err := os.WriteFile(filepath.Join(work, w[2]), []byte(strings.Join(body, "\n")+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			case w[0] == "cloudbridge" && len(w) > 1 && w[1] == "serve":
				if strings.Join(w[1:], " ") != strings.Join(serveLine[3:], " ") {
					t.Fatalf("walkthrough serves with %q, set-up with %q", w, serveLine)
				}
			case w[0] == "cloudbridge":
				if natsURL == "" {
					t.Fatalf("%q runs before the README exports NATS_URL", block[i])
				}
				var stdin string
				if last := len(w) - 1; w[last] == "<<EOF" { // a here-document: the command's stdin
					var body []string
					for i++; block[i] != "EOF"; i++ {
						body = append(body, block[i])
					}
					stdin, w = strings.Join(body, "\n")+"\n", w[:last]
				}
				out, code := runCBIn(w[1:], stdin)
				if code != 0 {
					t.Fatalf("%s: exit %d\n%s", block[i], code, out)
				}
				if strings.Contains(block[i], "--json") && !json.Valid([]byte(out)) {
					t.Fatalf("%s: not JSON:\n%s", block[i], out)
				}
				if strings.HasPrefix(strings.Join(w, " "), "cloudbridge resolve bio local-bio biodb01") &&
					!strings.Contains(out, "password01") {
					t.Fatalf("%s: no password in\n%s", block[i], out)
				}
				ran++
			case w[0] == "nats" && w[1] == "req":
				msg, err := nc.Request(w[2], []byte(w[3]), 5*time.Second)
				if err != nil {
					t.Fatalf("%s: %v", block[i], err)
				}
				if werr := events.ReplyError(msg); werr != nil {
					t.Fatalf("%s: %v", block[i], werr)
				}
				if strings.Contains(w[2], "resolve") && !strings.Contains(string(msg.Data), "password01") {
					t.Fatalf("%s: %s", block[i], msg.Data)
				}
				ran++
			case w[0] == "nats" && w[1] == "micro" && w[2] == "ls":
				if _, err := nc.Request("$SRV.PING.cloudbridge", nil, 5*time.Second); err != nil {
					t.Fatalf("%s: %v", block[i], err)
				}
				ran++
			default:
				t.Fatalf("the test does not know README line %q", block[i])
			}
		}
	}
	if ran < 8 {
		t.Fatalf("ran only %d README commands", ran)
	}
	// The other server saw none of it.
	if _, err := otherNC.Request("cloudbridge.v1.resolve.bio.local-bio", []byte(`{"secret":"biodb01"}`), 200*time.Millisecond); err == nil {
		t.Fatal("the other NATS answers cloudbridge subjects")
	}
}

func mustParser(t *testing.T, c *cli) *kong.Kong {
	t.Helper()
	p, err := kong.New(c, kong.Exit(func(int) {}), kong.Vars(config.Vars()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
