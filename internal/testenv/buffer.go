package testenv

import (
	"bytes"
	"sync"
)

// Buffer collects what a process, a logger or a server writes while tests
// read it: a bytes.Buffer safe for concurrent use. Past Limit bytes (when
// set) further writes are dropped, so a chatty process cannot fill memory.
type Buffer struct {
	Limit int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Limit > 0 && b.b.Len() > b.Limit {
		return len(p), nil
	}
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
