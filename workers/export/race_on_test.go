//go:build race

package export

// raceEnabled scales the largest tests down under the race detector, which
// slows this pipeline about tenfold.
const raceEnabled = true
