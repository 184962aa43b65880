package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/cloudbridge/cloudbridge/events"
)

type secretCmd struct {
	Put secretPutCmd `cmd:"" help:"Store a secret in the built-in store of a builtin connection."`
	Ls  secretLsCmd  `cmd:"" aliases:"list" help:"List the names of a connection's built-in secrets (never values)."`
	Rm  secretRmCmd  `cmd:"" aliases:"delete" help:"Delete a built-in secret."`
}

type secretPutCmd struct {
	Conn     string   `arg:"" help:"Connection name (provider builtin)."`
	Name     string   `arg:"" help:"Secret name."`
	Pairs    []string `arg:"" optional:"" help:"key=value pairs; the secret becomes a JSON object. Without pairs or --from-file the value is prompted for (input hidden) or read from stdin." placeholder:"KEY=VALUE"`
	FromFile string   `name:"from-file" help:"Read the value from a file (- for stdin): a JSON object is stored as an object, anything else as a string; its bytes are stored as they are, a trailing newline included (bare stdin drops it)." placeholder:"FILE"`
}

func (c *secretPutCmd) Run(e *env) error {
	value, err := c.value(e)
	if err != nil {
		return err
	}
	req := events.SecretPut{Connection: c.Conn, Name: c.Name, Value: value}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := e.f.request(e, events.ResourceSecrets, events.VerbPut, req, nil); err != nil {
		return err
	}
	return e.f.done(e, "secret %s stored in %s", c.Name, c.Conn)
}

// value builds the secret value from pairs, a file, a prompt or stdin.
func (c *secretPutCmd) value(e *env) (json.RawMessage, error) {
	switch {
	case len(c.Pairs) > 0 && c.FromFile != "":
		return nil, usageError{fmt.Errorf("give key=value pairs or --from-file, not both")}
	case len(c.Pairs) > 0:
		m := make(map[string]string, len(c.Pairs))
		for _, p := range c.Pairs {
			k, v, ok := strings.Cut(p, "=")
			if !ok || k == "" {
				return nil, usageError{fmt.Errorf("%q: want key=value", strings.SplitN(p, "=", 2)[0])}
			}
			if _, dup := m[k]; dup {
				return nil, usageError{fmt.Errorf("key %q given twice", k)}
			}
			m[k] = v
		}
		return json.Marshal(m)
	case c.FromFile != "":
		b, err := readInput(e, c.FromFile, events.MaxBuiltinSecretSize)
		if err != nil {
			return nil, err
		}
		return asValue(b)
	}
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(e.stderr, "value of %s (input hidden): ", c.Name)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, fmt.Errorf("reading value: %w", err)
		}
		return asValue(b)
	}
	// All of stdin (it was read up to the first NUL byte, dropping the rest
	// without a word), bounded like --from-file.
	// Room for the line end echo or a heredoc adds, trimmed before the
	// size is judged.
	b, err := io.ReadAll(io.LimitReader(e.stdin, events.MaxBuiltinSecretSize+3))
	if err != nil {
		return nil, fmt.Errorf("reading the value from standard input: %w", err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, usageError{fmt.Errorf("no value: give key=value pairs, --from-file, or the value on stdin")}
	}
	if len(b) > events.MaxBuiltinSecretSize {
		return nil, events.Errorf(events.CodeTooLarge, "value on standard input: larger than %d bytes", events.MaxBuiltinSecretSize)
	}
	return asValue(b)
}

// asValue stores a JSON object as is and anything else as a string.
func asValue(b []byte) (json.RawMessage, error) {
	t := strings.TrimSpace(string(b))
	if strings.HasPrefix(t, "{") {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(t), &m); err == nil {
			return json.RawMessage(t), nil
		}
	}
	if len(b) == 0 {
		return nil, usageError{fmt.Errorf("empty value")}
	}
	if !utf8.Valid(b) {
		// json.Marshal would replace each bad byte with U+FFFD: a value
		// other than the one given, stored without a word.
		return nil, events.Errorf(events.CodeBadRequest, "value: not valid UTF-8; the built-in store keeps a JSON object or text (encode binary values, e.g. base64)")
	}
	return json.Marshal(string(b))
}

type secretLsCmd struct {
	Conn string `arg:"" help:"Connection name."`
}

func (c *secretLsCmd) Run(e *env) error {
	var out events.SecretNames
	if err := e.f.request(e, events.ResourceSecrets, events.VerbList, events.SecretListRequest{Connection: c.Conn}, &out); err != nil {
		return err
	}
	if e.f.JSON {
		return printJSON(e.stdout, out)
	}
	rows := make([][]string, 0, len(out.Names))
	for _, n := range out.Names {
		rows = append(rows, []string{n})
	}
	return printTable(e.stdout, "secrets in "+c.Conn, []string{"NAME"}, rows)
}

type secretRmCmd struct {
	Conn string `arg:"" help:"Connection name."`
	Name string `arg:"" help:"Secret name."`
}

func (c *secretRmCmd) Run(e *env) error {
	if err := e.f.request(e, events.ResourceSecrets, events.VerbDelete, events.SecretRef{Connection: c.Conn, Name: c.Name}, nil); err != nil {
		return err
	}
	return e.f.done(e, "secret %s deleted from %s", c.Name, c.Conn)
}
