package events

import (
	"strings"
	"testing"
	"time"
)

// TestExportAcceptedWorstCaseFits: a broadcast of MaxAcceptedRanges ranges
// with the largest sequences and stored times and the longest names still
// decodes under MaxRequestSize.
func TestExportAcceptedWorstCaseFits(t *testing.T) {
	const big = uint64(1 << 62)
	a := ExportAccepted{Export: strings.Repeat("e", 63), Worker: strings.Repeat("w", 64), Runner: strings.Repeat("r", 64),
		Stream: strings.Repeat("S", 255), StreamCreated: time.Now(), ConsumerCreated: time.Now()}
	for i := range MaxAcceptedRanges {
		a.Ranges = append(a.Ranges, []uint64{big - uint64(i), big - uint64(i)})
		a.Stored = append(a.Stored, []int64{1<<63 - 1, 1<<63 - 1})
	}
	body, err := Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var b ExportAccepted
	if err := Decode(body, &b); err != nil {
		t.Fatalf("%d bytes: %v", len(body), err)
	}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Logf("worst case: %d bytes of %d", len(body), MaxRequestSize)
}
