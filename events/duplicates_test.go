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
