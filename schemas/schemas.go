// Package schemas holds the JSON Schemas (draft 2020-12) of cloudbridge's wire
// contract v1, one per message type of package events, with golden example
// messages. Both are embedded, so the binary and tests can validate documents
// without touching the file system.
//
// A schema is named after its file: resolve-request is
// resolve-request.schema.json, its examples are examples/resolve-request/*.json.
// The shared building blocks live in defs.schema.json, which is not a message
// and so is not among Names.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// BaseURL is the base of every schema's $id; a schema's id is BaseURL + name + ".schema.json".
const BaseURL = "https://github.com/cloudbridge/cloudbridge/schemas/"

// defsName is the schema of shared definitions, referenced by the others.
const defsName = "defs"

const schemaSuffix = ".schema.json"

//go:embed *.schema.json
var schemaFS embed.FS

//go:embed examples
var exampleFS embed.FS

// ErrUnknownSchema is returned for a name that is not one of Names.
var ErrUnknownSchema = errors.New("unknown schema")

// Names returns the name of every message schema, sorted.
func Names() []string {
	entries, err := fs.ReadDir(schemaFS, ".")
	if err != nil {
		panic(fmt.Sprintf("schemas: reading embedded schemas: %v", err)) // embedded at build time
	}
	var names []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), schemaSuffix)
		if ok && name != defsName {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// ID returns the $id of the named schema.
func ID(name string) string { return BaseURL + name + schemaSuffix }

// Schema returns the JSON text of the named schema. Its $refs point into
// defs.schema.json and other schemas by relative URL, so a consumer outside Go
// needs every file: Schema("defs") returns the shared definitions.
func Schema(name string) ([]byte, error) {
	if !validName(name) {
		return nil, fmt.Errorf("schema %q: %w", name, ErrUnknownSchema)
	}
	b, err := schemaFS.ReadFile(name + schemaSuffix)
	if err != nil {
		return nil, fmt.Errorf("schema %q: %w", name, ErrUnknownSchema)
	}
	return b, nil
}

// Example is one golden example message.
type Example struct {
	// Name is the file name without .json, e.g. "biodb01".
	Name string
	// Doc is the JSON document.
	Doc []byte
}

// Examples returns the golden examples of the named schema, sorted by name.
func Examples(name string) ([]Example, error) {
	if !validName(name) || name == defsName {
		return nil, fmt.Errorf("examples of %q: %w", name, ErrUnknownSchema)
	}
	dir := path.Join("examples", name)
	entries, err := fs.ReadDir(exampleFS, dir)
	if err != nil {
		return nil, fmt.Errorf("examples of %q: %w", name, ErrUnknownSchema)
	}
	var out []Example
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		b, err := exampleFS.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading example %s/%s: %w", name, e.Name(), err)
		}
		out = append(out, Example{Name: base, Doc: b})
	}
	return out, nil
}

// Validate checks doc, a JSON document, against the named schema. A document
// that does not match returns a *ValidationError; a name that is not one of
// Names returns an error wrapping ErrUnknownSchema.
func Validate(name string, doc []byte) error {
	sch, err := compiled(name)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return &ValidationError{Schema: name, Problems: []Problem{{Location: "", Message: "not a single JSON document"}}}
	}
	if err := sch.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return &ValidationError{Schema: name, Problems: problems(ve)}
		}
		return fmt.Errorf("validating against %s: %w", name, err)
	}
	return nil
}

// ValidationError says where a document breaks its schema. Its messages never
// quote the document's values (which may be secrets), only locations, property
// names, types, lengths and the schema's own constants, so it is safe to log
// and to send to a requester.
type ValidationError struct {
	// Schema is the schema's name.
	Schema string
	// Problems lists each failed check, most specific first.
	Problems []Problem
}

// Problem is one failed check of a ValidationError.
type Problem struct {
	// Location is a JSON pointer into the document, "" for the whole document.
	Location string
	// Keyword is the schema keyword that failed, such as "required" or "pattern".
	Keyword string
	// SchemaLocation is the failing keyword in the schemas, such as
	// "connection.schema.json#/$defs/aws/properties/region/pattern".
	SchemaLocation string
	// Message describes the failure without quoting the document's values.
	Message string
}

// Error implements error.
func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document does not match schema %s", e.Schema)
	for i, p := range e.Problems {
		if i == maxProblemsInMessage {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		loc := p.Location
		if loc == "" {
			loc = "/"
		}
		fmt.Fprintf(&b, "; at %s: %s", loc, p.Message)
	}
	return b.String()
}

const maxProblemsInMessage = 5

var (
	compileOnce sync.Once
	compiledSet map[string]*jsonschema.Schema
	compileErr  error
)

// compiled returns the compiled schema of name, compiling all of them once.
func compiled(name string) (*jsonschema.Schema, error) {
	compileOnce.Do(func() { compiledSet, compileErr = compileAll() })
	if compileErr != nil {
		return nil, compileErr
	}
	sch, ok := compiledSet[name]
	if !ok {
		return nil, fmt.Errorf("schema %q: %w", name, ErrUnknownSchema)
	}
	return sch, nil
}

func compileAll() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noLoader{})
	names := append(Names(), defsName)
	for _, name := range names {
		b, err := schemaFS.ReadFile(name + schemaSuffix)
		if err != nil {
			return nil, fmt.Errorf("reading schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parsing schema %s: %w", name, err)
		}
		if err := c.AddResource(ID(name), doc); err != nil {
			return nil, fmt.Errorf("adding schema %s: %w", name, err)
		}
	}
	out := make(map[string]*jsonschema.Schema, len(names))
	for _, name := range names {
		sch, err := c.Compile(ID(name))
		if err != nil {
			return nil, fmt.Errorf("compiling schema %s: %w", name, err)
		}
		out[name] = sch
	}
	delete(out, defsName)
	return out, nil
}

// noLoader refuses to fetch anything: every schema is embedded, and a $ref to
// anything else is a bug to surface at compile time, not a network call.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not embedded", url)
}

func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "/\\.") && name == path.Clean(name)
}
