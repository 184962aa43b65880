// Package admin is the worker behind cloudbridge.v1.admin.…: CRUD on
// connections, built-in secrets and export blocks, and rekey.
package admin

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/micro"

	"github.com/cloudbridge/cloudbridge/events"
	"github.com/cloudbridge/cloudbridge/internal/endpoint"
	"github.com/cloudbridge/cloudbridge/internal/endpoint/srv"
	"github.com/cloudbridge/cloudbridge/internal/provider/all"
	"github.com/cloudbridge/cloudbridge/internal/registry"
)

// Registry is what the worker needs of the registry.
type Registry interface {
	PutConnection(ctx context.Context, c events.Connection) (events.Connection, error)
	LookupConnection(ctx context.Context, name string) (events.Connection, error)
	Connections() []events.Connection
	DeleteConnection(ctx context.Context, name string) error

	PutSecret(ctx context.Context, conn, name string, value []byte) error
	SecretNames(ctx context.Context, conn string) ([]string, error)
	DeleteSecret(ctx context.Context, conn, name string) error

	PutExport(ctx context.Context, x events.Export) (events.Export, error)
	LookupExport(ctx context.Context, name string) (events.Export, error)
	Exports() []events.Export
	DeleteExport(ctx context.Context, name string) error

	Rekey(ctx context.Context) (registry.RekeyResult, error)
	CurrentKeyID() string
}

// Providers is what the worker needs of the provider table
// (internal/provider.Table): the redaction of every connection it replies
// with. A connection put is checked by the registry's table (the same one,
// registry.Options.Providers), with the stored connection at hand
// (keep-redacted and the routing check): once, not here again.
type Providers interface {
	Redact(c events.Connection) events.Connection
}

// Invalidator drops cache entries when a secret changes through this worker;
// other workers see the change through their registry watch.
type Invalidator interface {
	SecretChanged(conn, secret string)
}

// Worker serves the admin endpoints.
type Worker struct {
	subjects events.Subjects
	reg      Registry
	inv      Invalidator
	runner   *endpoint.Runner
	prov     Providers
}

// New returns an admin worker checking connections with the worker's
// provider table (all.Table).
func New(subjects events.Subjects, reg Registry, inv Invalidator, runner *endpoint.Runner) *Worker {
	return &Worker{subjects: subjects, reg: reg, inv: inv, runner: runner, prov: all.Table}
}

// WithProviders makes the worker check connections with p (the worker's
// table with its endpoint allowlist) in place of all.Table.
func (w *Worker) WithProviders(p Providers) *Worker {
	w.prov = p
	return w
}

// Register adds the admin endpoints to the service.
func (w *Worker) Register(svc *srv.Service) error {
	type ep struct {
		resource, verb string
		fn             endpoint.Func
	}
	eps := []ep{
		{events.ResourceConnections, events.VerbPut, w.putConnection},
		{events.ResourceConnections, events.VerbGet, w.getConnection},
		{events.ResourceConnections, events.VerbList, w.listConnections},
		{events.ResourceConnections, events.VerbDelete, w.deleteConnection},
		{events.ResourceSecrets, events.VerbPut, w.putSecret},
		{events.ResourceSecrets, events.VerbList, w.listSecrets},
		{events.ResourceSecrets, events.VerbDelete, w.deleteSecret},
		{events.ResourceExports, events.VerbPut, w.putExport},
		{events.ResourceExports, events.VerbGet, w.getExport},
		{events.ResourceExports, events.VerbList, w.listExports},
		{events.ResourceExports, events.VerbDelete, w.deleteExport},
	}
	for _, e := range eps {
		name := "admin-" + e.resource + "-" + e.verb
		if err := svc.AddEndpoint(name, w.runner.Handler(name, e.fn),
			srv.WithSubject(w.subjects.Admin(e.resource, e.verb))); err != nil {
			return fmt.Errorf("adding endpoint %s: %w", name, err)
		}
	}
	if err := svc.AddEndpoint("admin-rekey", w.runner.Handler("admin-rekey", w.rekey),
		srv.WithSubject(w.subjects.AdminRekey())); err != nil {
		return fmt.Errorf("adding endpoint admin-rekey: %w", err)
	}
	return nil
}

func decodeName(req micro.Request) (string, error) {
	var in events.NameRequest
	if err := events.Decode(req.Data(), &in); err != nil {
		return "", err
	}
	if err := events.CheckName("name", in.Name); err != nil {
		return "", err
	}
	return in.Name, nil
}

func (w *Worker) putConnection(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	growStack()
	var c events.Connection
	if err := events.Decode(req.Data(), &c); err != nil {
		return nil, err
	}
	f.Conn = c.Name
	stored, err := w.reg.PutConnection(ctx, c)
	if err != nil {
		return nil, err
	}
	return w.prov.Redact(stored), nil
}

func (w *Worker) getConnection(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	name, err := decodeName(req)
	if err != nil {
		return nil, err
	}
	f.Conn = name
	c, err := w.reg.LookupConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	return w.prov.Redact(c), nil
}

func (w *Worker) listConnections(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.Empty
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	out := events.ConnectionList{Connections: []events.Connection{}}
	for _, c := range w.reg.Connections() {
		out.Connections = append(out.Connections, w.prov.Redact(c))
	}
	return out, nil
}

func (w *Worker) deleteConnection(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	name, err := decodeName(req)
	if err != nil {
		return nil, err
	}
	f.Conn = name
	if err := w.reg.DeleteConnection(ctx, name); err != nil {
		return nil, err
	}
	return events.Empty{}, nil
}

func (w *Worker) putSecret(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	growStack()
	var in events.SecretPut
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	f.Conn, f.Audit.Secret = in.Connection, in.Name
	if err := in.Validate(); err != nil {
		return nil, err
	}
	err := w.reg.PutSecret(ctx, in.Connection, in.Name, in.Value)
	// Invalidated also when the put failed in a way that may follow its
	// write (a timeout, the bucket unavailable): the value may be stored,
	// and this worker's watcher does not announce its own writes. A
	// refusal (bad_request, not_found, ...) changed nothing.
	if code := events.CodeOf(err); err == nil || code == events.CodeTimeout || code == events.CodeUnavailable || code == events.CodeInternal {
		w.inv.SecretChanged(in.Connection, in.Name)
	}
	if err != nil {
		return nil, err
	}
	return events.Empty{}, nil
}

func (w *Worker) listSecrets(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.SecretListRequest
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	if err := events.CheckName("connection", in.Connection); err != nil {
		return nil, err
	}
	f.Conn = in.Connection
	names, err := w.reg.SecretNames(ctx, in.Connection)
	if err != nil {
		return nil, err
	}
	return events.SecretNames{Names: names}, nil
}

func (w *Worker) deleteSecret(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.SecretRef
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	f.Conn, f.Audit.Secret = in.Connection, in.Name
	if err := in.Validate(); err != nil {
		return nil, err
	}
	if err := w.reg.DeleteSecret(ctx, in.Connection, in.Name); err != nil {
		return nil, err
	}
	w.inv.SecretChanged(in.Connection, in.Name)
	return events.Empty{}, nil
}

func (w *Worker) putExport(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var x events.Export
	if err := events.Decode(req.Data(), &x); err != nil {
		return nil, err
	}
	f.Export = x.Name
	return w.reg.PutExport(ctx, x)
}

func (w *Worker) getExport(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	name, err := decodeName(req)
	if err != nil {
		return nil, err
	}
	f.Export = name
	return w.reg.LookupExport(ctx, name)
}

func (w *Worker) listExports(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.Empty
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	return events.ExportList{Exports: append([]events.Export{}, w.reg.Exports()...)}, nil
}

func (w *Worker) deleteExport(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	name, err := decodeName(req)
	if err != nil {
		return nil, err
	}
	f.Export = name
	if err := w.reg.DeleteExport(ctx, name); err != nil {
		return nil, err
	}
	return events.Empty{}, nil
}

func (w *Worker) rekey(ctx context.Context, req micro.Request, f *endpoint.Fields) (any, error) {
	var in events.Empty
	if err := events.Decode(req.Data(), &in); err != nil {
		return nil, err
	}
	res, err := w.reg.Rekey(ctx)
	if err != nil {
		return nil, err
	}
	failed := res.Failed
	if failed == nil {
		failed = []string{}
	}
	return events.RekeyReply{Resealed: res.Resealed, Failed: failed, Current: w.reg.CurrentKeyID()}, nil
}
