// Package events is cloudbridge's wire contract in Go: subject builders, the
// request, reply, stored-object and event types, the error table, and a small
// typed client for services that request credentials.
//
// It imports only the standard library and nats.go, so requesters can depend
// on it without pulling in the worker.
package events
