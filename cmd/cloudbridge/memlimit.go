package main

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/cloudbridge/cloudbridge/internal/config"
)

// cgroupMemoryFiles hold the memory limit of the worker's cgroup (v2, v1).
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimit decides the runtime's soft memory limit from --memory-limit:
// limit is what to set (-1: leave the runtime's own, GOMEMLIMIT or none) and
// why says where it comes from.
func memoryLimit(v string, getenv func(string) string, readFile func(string) ([]byte, error)) (limit int64, why string, err error) {
	n, err := config.ParseMemoryLimit(v)
	switch {
	case err != nil:
		return -1, "", err
	case n == 0:
		return math.MaxInt64, "off", nil
	case n > 0:
		return n, "--memory-limit", nil
	case getenv("GOMEMLIMIT") != "":
		return -1, "GOMEMLIMIT", nil
	}
	for _, f := range cgroupMemoryFiles {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		max, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// "max" (v2) or a huge number (v1) is no limit.
		if err != nil || max <= 0 || max >= 1<<50 {
			return -1, "none", nil
		}
		return max / 10 * 9, "90% of the cgroup memory limit " + strconv.FormatInt(max, 10), nil
	}
	return -1, "none", nil
}

// applyMemoryLimit sets the soft memory limit of --memory-limit.
func applyMemoryLimit(v string, log zerolog.Logger) error {
	limit, why, err := memoryLimit(v, os.Getenv, os.ReadFile)
	if err != nil {
		return err
	}
	if limit >= 0 {
		debug.SetMemoryLimit(limit)
	}
	ev := log.Info().Str("source", why)
	if cur := debug.SetMemoryLimit(-1); cur != math.MaxInt64 {
		ev = ev.Str("limit", fmt.Sprintf("%dMiB", cur>>20))
	}
	ev.Msg("memory limit")
	return nil
}
