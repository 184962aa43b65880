package events

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the subject prefix used unless configured otherwise.
const DefaultPrefix = "cloudbridge"

// Version is the wire version carried in every subject.
const Version = "v1"

// Operations on a connection, the third token of a request subject.
const (
	OpResolve = "resolve"
	OpTest    = "test"
	OpToken   = "token"
)

// Admin resources and verbs.
const (
	ResourceConnections = "connections"
	ResourceSecrets     = "secrets"
	ResourceExports     = "exports"

	VerbPut    = "put"
	VerbGet    = "get"
	VerbList   = "list"
	VerbDelete = "delete"
	VerbRekey  = "rekey"
)

// Subjects builds every subject of the contract under one prefix. The zero
// value uses DefaultPrefix.
type Subjects struct {
	Prefix string
}

func (s Subjects) base() string {
	p := s.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return p + "." + Version
}

// CheckPrefix validates a configured subject prefix: one or more name tokens
// separated by dots.
func CheckPrefix(p string) error {
	if p == "" {
		return fmt.Errorf("subject prefix is empty")
	}
	for _, tok := range strings.Split(p, ".") {
		if !ValidName(tok) {
			return fmt.Errorf("subject prefix %q: token %q is not a valid name", p, tok)
		}
	}
	return nil
}

// Op is the subject of a request for operation op on connection conn by group.
func (s Subjects) Op(op, group, conn string) string {
	return s.base() + "." + op + "." + group + "." + conn
}

// Resolve is the subject of a resolve request.
func (s Subjects) Resolve(group, conn string) string { return s.Op(OpResolve, group, conn) }

// Test is the subject of a test request.
func (s Subjects) Test(group, conn string) string { return s.Op(OpTest, group, conn) }

// Token is the subject of a token request.
func (s Subjects) Token(group, conn string) string { return s.Op(OpToken, group, conn) }

// OpWildcard is the subscription subject for every request of op.
func (s Subjects) OpWildcard(op string) string { return s.base() + "." + op + ".*.*" }

// ParseOp splits a request subject of op into its group and connection.
func (s Subjects) ParseOp(op, subject string) (group, conn string, err error) {
	rest, ok := strings.CutPrefix(subject, s.base()+"."+op+".")
	if !ok {
		return "", "", Errorf(CodeBadRequest, "subject %q is not a %s subject", truncate(subject, 120), op)
	}
	group, conn, ok = strings.Cut(rest, ".")
	if !ok || strings.Contains(conn, ".") {
		return "", "", Errorf(CodeBadRequest, "subject %q: want %s", truncate(subject, 120), s.Op(op, "<group>", "<conn>"))
	}
	if err := CheckName("group", group); err != nil {
		return "", "", err
	}
	if err := CheckName("connection", conn); err != nil {
		return "", "", err
	}
	return group, conn, nil
}

// Admin is the subject of an admin request, e.g. Admin("connections", "put").
func (s Subjects) Admin(resource, verb string) string {
	return s.base() + ".admin." + resource + "." + verb
}

// AdminRekey is the subject that re-seals every stored record under the current master key.
func (s Subjects) AdminRekey() string { return s.base() + ".admin." + VerbRekey }

// Invalidate is the broadcast subject that drops cache entries on every worker.
func (s Subjects) Invalidate() string { return s.base() + ".invalidate" }

// Exported is the subject of the result event of a delivered batch of export.
func (s Subjects) Exported(export string) string { return s.base() + ".exported." + export }

// Dead is the subject of a dead letter of export.
func (s Subjects) Dead(export string) string { return s.base() + ".dead." + export }

// DeadWildcard matches every dead letter.
func (s Subjects) DeadWildcard() string { return s.base() + ".dead.>" }

// ExportedWildcard matches every result event.
func (s Subjects) ExportedWildcard() string { return s.base() + ".exported.*" }

// Dead-letter admin: cloudbridge.v1.admin.dead.{list,get,replay,purge}.
const (
	ResourceDead = "dead"
	VerbReplay   = "replay"
	VerbPurge    = "purge"
)

// AdminDead is the subject of a dead-letter admin request, e.g.
// AdminDead(VerbList) = cloudbridge.v1.admin.dead.list.
func (s Subjects) AdminDead(verb string) string { return s.Admin(ResourceDead, verb) }
