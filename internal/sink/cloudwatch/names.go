package cloudwatch

import (
	"strings"
	"unicode/utf8"
)

// maxNameLen bounds log group and log stream names.
const maxNameLen = 512

// expand fills {subject} and {export} into a name template.
func expand(tmpl, subject, export string) string {
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	return strings.NewReplacer("{subject}", subject, "{export}", export).Replace(tmpl)
}

// GroupName makes a legal log group name: 1..512 of [.-_/#A-Za-z0-9]; any
// other character becomes '_'.
func GroupName(tmpl, subject, export string) string {
	s := expand(tmpl, subject, export)
	b := []byte(s)
	out := b[:0]
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r < utf8.RuneSelf && (r == '.' || r == '-' || r == '_' || r == '/' || r == '#' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			out = append(out, byte(r))
		} else {
			out = append(out, '_')
		}
	}
	if len(out) > maxNameLen {
		out = out[:maxNameLen]
	}
	if len(out) == 0 {
		return "_"
	}
	return string(out)
}

// StreamName makes a legal log stream name: 1..512 bytes without ':' '*' or
// control characters, which become '_'.
func StreamName(tmpl, subject, export string) string {
	if tmpl == "" {
		tmpl = "{subject}"
	}
	s := strings.ToValidUTF8(expand(tmpl, subject, export), "_")
	s = strings.Map(func(r rune) rune {
		if r == ':' || r == '*' || r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, s)
	if len(s) > maxNameLen {
		cut := maxNameLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	if s == "" {
		return "_"
	}
	return s
}
