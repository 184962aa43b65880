// Package deploy holds cloudbridge's deployment files (the Dockerfile, the
// sample nats-server.conf, the example master key) and the tests that keep
// them, and the repository's docker-compose.yml, in working order.
//
// Its Go API is a test harness for the sample NATS configuration: tests in
// other packages start a real nats-server from nats-server.conf with
// StartSampleServer and connect as each of its users with ConnectAs, to prove
// the two layers of authorization end to end.
package deploy
