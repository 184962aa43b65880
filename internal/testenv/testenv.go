// Package testenv holds what tests share: the small slice of testing.TB that
// fakes and harnesses need, so that no non-test package imports "testing".
// Its subpackages start NATS servers (natstest) and PostgreSQL (pgtest).
package testenv

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
