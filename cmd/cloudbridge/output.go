package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/cloudbridge/cloudbridge/events"
)

// printJSON writes v as indented JSON, the wire's shape, with no HTML escaping.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable writes rows under a header, aligned; no rows prints "no <what>".
func printTable(w io.Writer, what string, header []string, rows [][]string) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintf(w, "no %s\n", what)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// readInput reads a file, or standard input for "-", up to limit bytes. A
// missing or unreadable file (a directory, say) is bad_request, as bad JSON
// in it is.
func readInput(e *env, path string, limit int64) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, events.Errorf(events.CodeBadRequest, "reading %s: %v", path, unwrapPath(err))
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return nil, events.Errorf(events.CodeBadRequest, "reading %s: is a directory, want a file", path)
		}
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "reading %s: %v", path, unwrapPath(err))
	}
	if int64(len(b)) > limit {
		name := path
		if path == "-" {
			name = "standard input"
		}
		return nil, events.Errorf(events.CodeTooLarge, "%s: larger than the %d-byte limit", name, limit)
	}
	return b, nil
}

// readJSON reads a JSON document from a file or stdin (bad_request if it is not JSON).
func readJSON(e *env, path string, limit int64) (json.RawMessage, error) {
	body, err := readInput(e, path, limit)
	if err != nil {
		return nil, err
	}
	name := path
	if path == "-" {
		name = "standard input"
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, events.Errorf(events.CodeBadRequest, "%s is empty, want a JSON object", name)
	}
	var v json.RawMessage
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, events.Errorf(events.CodeBadRequest, "%s: not JSON: %v", name, err)
	}
	return v, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// done reports a verb that returns nothing: {} with --json, else a sentence.
func (f *clientFlags) done(e *env, format string, args ...any) error {
	if f.JSON {
		return printJSON(e.stdout, events.Empty{})
	}
	_, err := fmt.Fprintf(e.stdout, format+"\n", args...)
	return err
}

// printFields writes v (a wire object) for humans: one FIELD VALUE row per
// leaf, nested fields as dotted paths (cache.ttl), lists comma-separated.
// With --json the same object is printed as JSON instead (see show).
func printFields(w io.Writer, v any) error {
	b, err := events.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return err
	}
	var rows [][]string
	var walk func(path string, x any)
	walk = func(path string, x any) {
		switch t := x.(type) {
		case map[string]any:
			keys := make([]string, 0, len(t))
			for k := range t {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if path != "" {
					p = path + "." + k
				}
				walk(p, t[k])
			}
		case []any:
			parts := make([]string, 0, len(t))
			scalar := true
			for _, el := range t {
				switch el.(type) {
				case map[string]any, []any:
					scalar = false
				}
				parts = append(parts, leaf(el))
			}
			if !scalar {
				for i, el := range t {
					walk(fmt.Sprintf("%s[%d]", path, i), el)
				}
				return
			}
			rows = append(rows, []string{path, orDash(strings.Join(parts, ","))})
		default:
			rows = append(rows, []string{path, leaf(t)})
		}
	}
	walk("", tree)
	return printTable(w, "fields", []string{"FIELD", "VALUE"}, rows)
}

func leaf(x any) string {
	switch t := x.(type) {
	case nil:
		return "-"
	case string:
		return t
	case map[string]any, []any:
		b, _ := events.Marshal(t)
		return string(b)
	}
	return fmt.Sprint(x)
}

// show prints v as JSON with --json, else as a FIELD VALUE table.
func (f *clientFlags) show(e *env, v any) error {
	if f.JSON {
		return printJSON(e.stdout, v)
	}
	return printFields(e.stdout, v)
}
