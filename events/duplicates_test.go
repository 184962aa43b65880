package events

import (
	"errors"
	"strings"
	"testing"
)

// A name list naming one value twice is refused, naming the field, the
// second occurrence and the value (clipped).
func TestNameListsRefuseDuplicates(t *testing.T) {
	long := strings.Repeat("a", 200)
	conn := func(edit func(*Connection)) error {
		c := Connection{Name: "c", Provider: ProviderBuiltin, Groups: []string{"bio"}, Secrets: []string{"db*"}}
		edit(&c)
		return c.Validate()
	}
	export := func(subjects ...string) error {
		x := Export{Name: "e", Connection: "c", Subjects: subjects, CloudWatch: &CloudWatchSink{LogGroup: "g"}}
		return x.Validate()
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"groups", conn(func(c *Connection) { c.Groups = []string{"bio", "chem", "bio"} }), `groups[2]: "bio" is given twice`},
		{"any group", conn(func(c *Connection) { c.Groups = []string{"*", "*"} }), `groups[1]: "*" is given twice`},
		{"secrets", conn(func(c *Connection) { c.Secrets = []string{"db*", "db*"} }), `secrets[1]: "db*" is given twice`},
		{"long secret pattern", conn(func(c *Connection) { c.Secrets = []string{long, long} }), `secrets[1]: "` + long[:80] + `…" is given twice`},
		{"scopes", conn(func(c *Connection) { c.Tokens = &TokenPolicy{Scopes: []string{"s", "s"}} }), `tokens.scopes[1]: "s" is given twice`},
		{"subjects", export("logs.a", "logs.>", "logs.a"), `subjects[2]: "logs.a" is given twice`},
	} {
		if !errors.Is(tc.err, ErrBadRequest) || tc.err.Error() != tc.want {
			t.Errorf("%s: err = %v, want bad_request %q", tc.name, tc.err, tc.want)
		}
	}
	if err := conn(func(c *Connection) { c.Groups = []string{"bio", "chem"}; c.Secrets = []string{"a*", "b*"} }); err != nil {
		t.Errorf("distinct values refused: %v", err)
	}
	if err := export("logs.a", "logs.b"); err != nil {
		t.Errorf("distinct subjects refused: %v", err)
	}
}

// Filters of one export that overlap are refused (JetStream refuses such a
// consumer, so the block would be stored and never run); disjoint ones pass.
func TestExportSubjectsMayNotOverlap(t *testing.T) {
	export := func(subjects ...string) error {
		x := Export{Name: "e", Connection: "c", Subjects: subjects, CloudWatch: &CloudWatchSink{LogGroup: "g"}}
		return x.Validate()
	}
	for _, tc := range []struct {
		subjects []string
		want     string
	}{
		{[]string{"logs.>", "logs.app.>"}, `subjects[1]: "logs.app.>" overlaps subjects[0]: "logs.>"`},
		{[]string{"logs.app.web", "logs.app.*"}, `subjects[1]: "logs.app.*" overlaps subjects[0]: "logs.app.web"`},
		{[]string{"logs.a.*", "logs.*.x"}, `subjects[1]: "logs.*.x" overlaps subjects[0]: "logs.a.*"`},
		{[]string{"logs.b", "logs.*.x", "logs.a.>"}, `subjects[2]: "logs.a.>" overlaps subjects[1]: "logs.*.x"`},
	} {
		err := export(tc.subjects...)
		if !errors.Is(err, ErrBadRequest) || !strings.HasPrefix(err.Error(), tc.want+" ") {
			t.Errorf("%q: err = %v, want bad_request %q…", tc.subjects, err, tc.want)
		}
	}
	for _, ok := range [][]string{{"logs.a", "logs.b"}, {"logs.a.>", "logs.b.>"}, {"logs.*", "logs.*.*"}, {"logs.a", "logs.a.>"}, {"logs.*.x", "logs.*.y"}} {
		if err := export(ok...); err != nil {
			t.Errorf("%q: disjoint filters refused: %v", ok, err)
		}
	}
}

func TestSubjectsCollide(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.c", false}, {"a.*", "a.b", true}, {"a.>", "a.b.c", true},
		{"a.>", "a", false}, {"a", "a.*", false}, {"*.>", "a.b", true}, {">", "x", true},
		{"a.*.c", "a.b.*", true}, {"a.*.c", "a.b.d", false}, {"a.b", "a.b.c", false}, {"a.*", "a.*.*", false},
	} {
		if got := SubjectsCollide(tc.a, tc.b); got != tc.want {
			t.Errorf("SubjectsCollide(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := SubjectsCollide(tc.b, tc.a); got != tc.want {
			t.Errorf("SubjectsCollide(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
}
