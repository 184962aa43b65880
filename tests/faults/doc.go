// Package faults holds the out-of-process fault tests: real nats-server 2.15
// processes in a routed 3-node cluster, real cloudbridge worker processes,
// and the AWS fake on loopback, with nodes killed (SIGKILL), workers killed
// or stopped (SIGTERM) and the sink throttling or failing while load runs.
// The tests are part of `go test ./...` and skip under -short; see README,
// "Testing".
package faults
