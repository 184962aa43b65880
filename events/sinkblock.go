package events

import (
	"reflect"
	"strings"
)

// SinkBlock is the block of one sink kind in an export (cloudwatch,
// cloud_logging, ...). Its type lives in sink_<kind>.go; the sink's code is
// a package under internal/sink, registered in internal/sink/all.
type SinkBlock interface {
	// Provider is the provider the export's connection must have.
	Provider() string
	// Validate checks the block, with bad_request errors naming the field.
	Validate() error
}

// sinkField is a field of Export holding a sink block.
type sinkField struct {
	name  string // the block's JSON name
	index int    // the field's index in Export
}

// sinkFields are Export's sink blocks, in declaration order: its fields whose
// type implements SinkBlock, so that the struct is the only list of them.
var sinkFields = func() []sinkField {
	var out []sinkField
	block := reflect.TypeFor[SinkBlock]()
	t := reflect.TypeFor[Export]()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Pointer || !f.Type.Implements(block) {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		out = append(out, sinkField{name: name, index: i})
	}
	return out
}()

// SinkKinds are the JSON names of the sink blocks an export may have.
func SinkKinds() []string {
	out := make([]string, len(sinkFields))
	for i, f := range sinkFields {
		out[i] = f.name
	}
	return out
}

// Sinks are the sink blocks set in the export, by JSON name (normally one).
func (e *Export) Sinks() map[string]SinkBlock {
	v := reflect.ValueOf(e).Elem()
	out := map[string]SinkBlock{}
	for _, f := range sinkFields {
		if fv := v.Field(f.index); !fv.IsNil() {
			out[f.name] = fv.Interface().(SinkBlock)
		}
	}
	return out
}

// Sink is the export's sink block and its JSON name; "" and nil when it has
// none (when it has several, Validate fails; Sink returns the first).
func (e *Export) Sink() (string, SinkBlock) {
	v := reflect.ValueOf(e).Elem()
	for _, f := range sinkFields {
		if fv := v.Field(f.index); !fv.IsNil() {
			return f.name, fv.Interface().(SinkBlock)
		}
	}
	return "", nil
}

// Provider is the provider a connection of this export must have: the one
// its sink kind declares ("" when the export has no sink block).
func (e *Export) Provider() string {
	if _, b := e.Sink(); b != nil {
		return b.Provider()
	}
	return ""
}

// checkSink checks that exactly one sink block is set and validates it.
func (e *Export) checkSink() error {
	set := e.Sinks()
	switch len(set) {
	case 0:
		return Errorf(CodeBadRequest, "%s: one sink required", strings.Join(SinkKinds(), ", "))
	case 1:
		for _, b := range set {
			return b.Validate()
		}
	}
	return Errorf(CodeBadRequest, "%s: exactly one sink allowed", strings.Join(SinkKinds(), ", "))
}
