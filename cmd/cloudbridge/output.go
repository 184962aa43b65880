package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/cloudbridge/cloudbridge/events"
)

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable writes rows under a header, aligned.
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// readInput reads a file, or standard input for "-", up to limit bytes.
func readInput(e *env, path string, limit int64) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = e.stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageError{fmt.Errorf("reading %s: %w", path, err)}
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, usageError{fmt.Errorf("%s: larger than %d bytes", path, limit)}
	}
	return b, nil
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
