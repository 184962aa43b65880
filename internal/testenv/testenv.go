// Package testenv holds what tests share: the small slice of testing.TB that
// fakes and harnesses need, so that no non-test package imports "testing".
// Its subpackages start NATS servers (natstest) and PostgreSQL (pgtest).
package testenv

import (
	"slices"
	"time"
)

// TB is the part of testing.TB that fakes and harnesses use; *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Skip(args ...any)
	Skipf(format string, args ...any)
	TempDir() string
	Name() string
}

// Eventually polls cond until it holds or within has passed, then fails the
// test: a wait for a condition with a deadline, never a sleep standing in
// for synchronization.
func Eventually(t TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Median is the middle value of xs (of an even count, the upper of the two
// middle ones; 0 for none); xs is left as it is. The benchmarks report the
// median of their rounds.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}
