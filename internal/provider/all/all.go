// Package all is the one table of cloudbridge's providers. Adding a provider
// is one line here (see the README, "Adding a provider").
package all

import (
	"github.com/cloudbridge/cloudbridge/internal/provider"
	"github.com/cloudbridge/cloudbridge/internal/provider/aws"
	"github.com/cloudbridge/cloudbridge/internal/provider/builtin"
	"github.com/cloudbridge/cloudbridge/internal/provider/gcp"
)

// Table holds every provider a worker knows, in the order error messages
// list them.
var Table = provider.NewTable(
	aws.Kind,
	gcp.Kind,
	builtin.Kind,
)
