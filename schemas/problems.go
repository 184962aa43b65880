package schemas

import (
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// problems flattens a validation error tree into its leaves, with messages
// written here rather than by the library, because the library's messages
// quote the offending value (a pattern mismatch of a private key would put
// the key in a log line).
func problems(ve *jsonschema.ValidationError) []Problem {
	var out []Problem
	seen := map[Problem]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		p := Problem{
			Location:       pointer(e.InstanceLocation),
			Keyword:        keyword(e.ErrorKind),
			SchemaLocation: strings.TrimPrefix(e.SchemaURL, BaseURL),
			Message:        safeMessage(e.ErrorKind),
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	walk(ve)
	return out
}

// pointer renders an instance location as a JSON pointer (RFC 6901).
func pointer(loc []string) string {
	var b strings.Builder
	for _, tok := range loc {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(tok))
	}
	return b.String()
}

func keyword(k jsonschema.ErrorKind) string {
	switch k.(type) {
	case nil:
		return ""
	case *kind.Not:
		return "not"
	}
	return strings.Join(k.KeywordPath(), "/")
}

// safeMessage describes a failed check from the schema's side only.
func safeMessage(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		return fmt.Sprintf("got %s, want %s", k.Got, strings.Join(k.Want, " or "))
	case *kind.Required:
		return fmt.Sprintf("missing property %s", quoteAll(k.Missing))
	case *kind.DependentRequired:
		return fmt.Sprintf("property %s requires %s", quoteAll([]string{k.Prop}), quoteAll(k.Missing))
	case *kind.AdditionalProperties:
		return fmt.Sprintf("unknown property %s", quoteAll(k.Properties))
	case *kind.Enum:
		return fmt.Sprintf("value must be one of %s", display(k.Want))
	case *kind.Const:
		return fmt.Sprintf("value must be %s", display([]any{k.Want}))
	case *kind.Pattern:
		return fmt.Sprintf("does not match pattern %q", k.Want)
	case *kind.Format:
		return fmt.Sprintf("not a valid %s", k.Want)
	case *kind.MinLength:
		return fmt.Sprintf("shorter than %d characters", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("longer than %d characters", k.Want)
	case *kind.MinItems:
		return fmt.Sprintf("fewer than %d items", k.Want)
	case *kind.MaxItems:
		return fmt.Sprintf("more than %d items", k.Want)
	case *kind.Minimum:
		return fmt.Sprintf("less than %s", k.Want.RatString())
	case *kind.Maximum:
		return fmt.Sprintf("greater than %s", k.Want.RatString())
	case *kind.OneOf:
		if len(k.Subschemas) == 0 {
			return "matches none of the alternatives"
		}
		return "matches more than one of the alternatives"
	case *kind.PropertyNames:
		return "a property name is not allowed"
	case *kind.Not:
		return "has a property or value that is not allowed here"
	case *kind.FalseSchema:
		return "not allowed"
	case nil:
		return "invalid"
	}
	if kw := keyword(k); kw != "" {
		return "fails " + kw
	}
	return "invalid"
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// display renders schema constants (strings, numbers, booleans); anything
// structured is summarized.
func display(vs []any) string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		switch v := v.(type) {
		case string:
			out = append(out, fmt.Sprintf("%q", v))
		case map[string]any, []any:
			out = append(out, "(a structured value)")
		default:
			out = append(out, fmt.Sprint(v))
		}
	}
	return strings.Join(out, ", ")
}
