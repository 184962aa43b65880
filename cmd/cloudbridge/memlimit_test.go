package main

import (
	"errors"
	"math"
	"testing"
)

// --memory-limit: a size is set, off lifts any limit, auto keeps GOMEMLIMIT
// or takes 90% of the cgroup's limit when there is one.
func TestMemoryLimit(t *testing.T) {
	noEnv := func(string) string { return "" }
	noFiles := func(string) ([]byte, error) { return nil, errors.New("no such file") }
	cgroup := func(v string) func(string) ([]byte, error) {
		return func(f string) ([]byte, error) {
			if f == cgroupMemoryFiles[0] {
				return []byte(v), nil
			}
			return nil, errors.New("no such file")
		}
	}
	for _, tc := range []struct {
		name, flag string
		env        func(string) string
		files      func(string) ([]byte, error)
		want       int64
		why        string
	}{
		{"size", "200MiB", noEnv, cgroup("1000000000\n"), 200 << 20, "--memory-limit"},
		{"off", "off", noEnv, cgroup("1000000000\n"), math.MaxInt64, "off"},
		{"auto, cgroup", "auto", noEnv, cgroup("1000000000\n"), 900000000, "90% of the cgroup memory limit 1000000000"},
		{"auto, cgroup without limit", "auto", noEnv, cgroup("max\n"), -1, "none"},
		{"auto, no cgroup", "auto", noEnv, noFiles, -1, "none"},
		{"auto, GOMEMLIMIT", "auto", func(k string) string {
			if k == "GOMEMLIMIT" {
				return "100MiB"
			}
			return ""
		}, cgroup("1000000000\n"), -1, "GOMEMLIMIT"},
	} {
		got, why, err := memoryLimit(tc.flag, tc.env, tc.files)
		if err != nil || got != tc.want || why != tc.why {
			t.Errorf("%s: memoryLimit = %d, %q, %v; want %d, %q", tc.name, got, why, err, tc.want, tc.why)
		}
	}
	if _, _, err := memoryLimit("lots", noEnv, noFiles); err == nil {
		t.Error("a bad --memory-limit: no error")
	}
}
