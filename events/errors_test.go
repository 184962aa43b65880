package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestErrorTableContract pins the numbers and exit codes users and scripts
// rely on: the table may grow, never renumber.
func TestErrorTableContract(t *testing.T) {
	want := []struct {
		code      Code
		num, exit int
	}{
		{CodeBadRequest, 400, 10}, {CodeUnauthorized, 401, 11}, {CodeForbidden, 403, 12}, {CodeNotFound, 404, 13},
		{CodeTooLarge, 413, 14}, {CodeThrottled, 429, 15}, {CodeInternal, 500, 16}, {CodeUnavailable, 503, 17},
		{CodeTimeout, 504, 18},
	}
	rows := ErrorTable()
	if len(rows) != len(want) || len(Codes()) != len(want) {
		t.Fatalf("table has %d rows, Codes %d, want %d", len(rows), len(Codes()), len(want))
	}
	for i, w := range want {
		r := rows[i]
		if r.Code != w.code || r.Number != w.num || r.Exit != w.exit || Codes()[i] != w.code {
			t.Errorf("row %d = %+v, want %s %d %d", i, r, w.code, w.num, w.exit)
		}
		if w.code.Number() != w.num || w.code.ExitCode() != w.exit || CodeForNumber(w.num) != w.code {
			t.Errorf("%s: Number %d ExitCode %d CodeForNumber(%d) %s", w.code, w.code.Number(), w.code.ExitCode(), w.num, CodeForNumber(w.num))
		}
		if r.Help == "" || strings.Contains(r.Help, "\n") || w.code.Help() != r.Help {
			t.Errorf("%s: help %q is not one line", w.code, r.Help)
		}
	}
	if Code("nosuch").Number() != 500 || Code("nosuch").ExitCode() != ExitFailure || CodeForNumber(999) != CodeInternal {
		t.Error("unknown codes and numbers are not internal")
	}
	if got := ExitCodesHelp(); got != "0 ok, 1 error, 2 usage, 10 bad_request, 11 unauthorized, 12 forbidden, 13 not_found, "+
		"14 too_large, 15 throttled, 16 internal, 17 unavailable, 18 timeout" {
		t.Errorf("ExitCodesHelp = %q", got)
	}
}

// TestREADMEErrorTable checks the README's error table, row by row, against
// the table, and every "NN code" exit code the README mentions.
func TestREADMEErrorTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	rowRE := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (\\d+) \\| (\\d+) \\| (.*) \\|$")
	rows := rowRE.FindAllStringSubmatch(readme, -1)
	table := ErrorTable()
	if len(rows) != len(table) {
		t.Fatalf("README has %d error table rows, the table %d", len(rows), len(table))
	}
	for i, m := range rows {
		r := table[i]
		num, _ := strconv.Atoi(m[2])
		exit, _ := strconv.Atoi(m[3])
		help := strings.ReplaceAll(m[4], "`", "")
		if Code(m[1]) != r.Code || num != r.Number || exit != r.Exit || help != r.Help {
			t.Errorf("README row %d: %s %d %d %q\n  table: %s %d %d %q", i, m[1], num, exit, help, r.Code, r.Number, r.Exit, r.Help)
		}
	}
	// Prose such as "10 bad_request, 11 unauthorized" must agree too.
	var names []string
	for _, r := range table {
		names = append(names, string(r.Code))
	}
	mention := regexp.MustCompile(`\b(\d+) (` + strings.Join(names, "|") + `)\b`)
	for _, m := range mention.FindAllStringSubmatch(readme, -1) {
		n, _ := strconv.Atoi(m[1])
		if c := Code(m[2]); n != c.ExitCode() && n != c.Number() {
			t.Errorf("README says %q: %s is exit %d, number %d", m[0], c, c.ExitCode(), c.Number())
		}
	}
}

const marker = "MARKER-7f3a" // stands for a foreign error's text: a URL, a body, a stream name

func TestWrapKeepsCauseOutOfTheWire(t *testing.T) {
	cause := fmt.Errorf("nats: %s: %w", marker, context.DeadlineExceeded)
	err := fmt.Errorf("storing connection %q: %w", "db", Wrap(CodeUnavailable, cause, "the registry is unavailable"))
	w := AsWire(err)
	if w.Code != CodeUnavailable || w.Message != `storing connection "db": the registry is unavailable` {
		t.Fatalf("AsWire = %+v", w)
	}
	if strings.Contains(err.Error(), marker) {
		t.Fatalf("Error() carries the cause: %s", err)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("errors.Is does not see the code and the cause")
	}
	if d := Detail(err); !strings.Contains(d, marker) || !strings.HasPrefix(d, w.Message) {
		t.Fatalf("Detail = %q lacks the cause", d)
	}
	body, _ := json.Marshal(ErrorReply{Error: w})
	if strings.Contains(string(body), marker) || strings.Contains(string(body), "cause") {
		t.Fatalf("reply body %s", body)
	}
	var back ErrorReply
	if err := json.Unmarshal(body, &back); err != nil || back.Error.Code != CodeUnavailable || back.Error.Message != w.Message {
		t.Fatalf("round trip: %v %+v", err, back.Error)
	}
}

// TestAsWireJoinedForeignError: a foreign error joined next to a wire error
// (several %w, errors.Join) does not reach the requester; the wire error's
// own message does.
func TestAsWireJoinedForeignError(t *testing.T) {
	foreign := errors.New("nats: " + marker)
	for name, err := range map[string]error{
		"two %w":     fmt.Errorf("storing: %w: %w", ErrUnavailable, foreign),
		"join":       errors.Join(foreign, Errorf(CodeNotFound, "secret %q not found", "db")),
		"nested":     fmt.Errorf("outer: %w", fmt.Errorf("%w (%w)", ErrTimeout, foreign)),
		"upstream":   fmt.Errorf("reading: %w", &multi{msg: "aws: " + marker, errs: []error{ErrThrottled, foreign}}),
		"wrap-in-wr": fmt.Errorf("x: %w", Wrap(CodeForbidden, foreign, "denied (%s)", "AccessDenied")),
	} {
		t.Run(name, func(t *testing.T) {
			w := AsWire(err)
			if strings.Contains(w.Message, marker) || w.Code == CodeInternal || w.Message == "" {
				t.Fatalf("AsWire = %+v", w)
			}
			if !strings.Contains(Detail(err), marker) {
				t.Fatalf("Detail %q lost the cause", Detail(err))
			}
		})
	}
	if w := AsWire(fmt.Errorf("a: %w", fmt.Errorf("b: %w", ErrNotFound))); w.Message != "a: b: not found" {
		t.Fatalf("context of safe wrappers lost: %+v", w)
	}
}

type multi struct {
	msg  string
	errs []error
}

func (m *multi) Error() string   { return m.msg }
func (m *multi) Unwrap() []error { return m.errs }
