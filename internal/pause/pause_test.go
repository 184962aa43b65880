package pause_test

import (
	"context"
	"testing"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/pause"
)

func TestFor(t *testing.T) {
	if !pause.For(context.Background(), 0) {
		t.Error("a zero wait on a live context: false")
	}
	if !pause.For(context.Background(), time.Millisecond) {
		t.Error("a short wait on a live context: false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if pause.For(ctx, 0) {
		t.Error("a zero wait on an ended context: true")
	}
	// An hour: only the context ending can make it return.
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- pause.For(ctx, time.Hour) }()
	cancel()
	if <-done {
		t.Error("a wait cut by its context: true")
	}
}
