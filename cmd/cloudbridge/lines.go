package main

import (
	"bufio"
	"errors"
	"io"

	"github.com/cloudbridge/cloudbridge/events"
)

// maxLine is the longest line `logs send -` reads as one event.
const maxLine = 1 << 20

// eachLine calls fn with every non-empty line of r (up to maxLine a line).
// A longer line is too_large, naming the limit and the line.
func eachLine(r io.Reader, fn func([]byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine+1) // +1: room for the line ending
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		if len(sc.Bytes()) > maxLine {
			return lineTooLong(line)
		}
		if err := fn(append([]byte(nil), sc.Bytes()...)); err != nil {
			return err
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return lineTooLong(line + 1)
	}
	return sc.Err()
}

func lineTooLong(n int) error {
	return events.Errorf(events.CodeTooLarge, "line %d of standard input is longer than the 1 MiB (%d bytes) limit of one event; nothing from it on was sent", n, maxLine)
}
