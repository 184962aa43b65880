// Package all is the registration table of the log-export sink kinds: one
// line per kind. The kind's block type (with the provider its connection
// must have and its validation) is in package events; its code is a package
// under internal/sink.
package all

import (
	"context"
	"fmt"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/sink"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudlogging"
	"github.com/cloudbridge/cloudbridge/internal/sink/cloudwatch"
	"github.com/cloudbridge/cloudbridge/internal/sink/s3"
)

// Kinds are the sink kinds, one registration line each.
var Kinds = []sink.Kind{
	cloudwatch.Kind,
	cloudlogging.Kind,
	s3.Kind,
}

// Open builds the sink of an export block from its connection with the kind
// registered for its block, after checking that the connection has the
// provider the block declares.
func Open(ctx context.Context, exp events.Export, conn events.Connection, c sink.Clients) (sink.Sink, error) {
	block, b := exp.Sink()
	if b == nil {
		return nil, events.Errorf(events.CodeBadRequest, "export %s: no sink", exp.Name)
	}
	if want := b.Provider(); conn.Provider != want {
		return nil, events.Errorf(events.CodeBadRequest, "export %s: connection %s is not %s %s connection", exp.Name, conn.Name, article(want), want)
	}
	for _, k := range Kinds {
		if k.Block == block {
			return k.New(ctx, exp, conn, c)
		}
	}
	return nil, fmt.Errorf("export %s: sink %s is not registered in internal/sink/all", exp.Name, block)
}

// article is "an" before a vowel sound ("an aws connection"), else "a".
func article(word string) string {
	if word != "" && (word[0] == 'a' || word[0] == 'e' || word[0] == 'i' || word[0] == 'o' || word[0] == 'u') {
		return "an"
	}
	return "a"
}
