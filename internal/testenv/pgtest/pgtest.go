// Package pgtest gives tests a PostgreSQL to log in to with resolved
// credentials: the machine's server on 127.0.0.1:5432 (trust auth, so it
// accepts any password), or a private instance started with scram-sha-256
// authentication, which proves the password is the right one.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudbridge/cloudbridge/internal/testenv"

	"github.com/jackc/pgx/v5"
)

// Server is a PostgreSQL server a test can create roles and databases on.
type Server struct {
	Host     string
	Port     int
	admin    string // superuser DSN
	required bool
}

// DSN is the connection string for user/password on database db.
func (s *Server) DSN(user, password, db string) string {
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable&connect_timeout=5", user, password, s.Host, s.Port, db)
}

// Local returns the machine's server on 127.0.0.1:5432. It skips the test when
// the server is not reachable, except under CI (CI=true), where it fails.
func Local(t testenv.TB) *Server {
	t.Helper()
	s := &Server{Host: "127.0.0.1", Port: 5432, admin: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&connect_timeout=5"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		unavailable(t, fmt.Sprintf("local PostgreSQL on 127.0.0.1:5432: %v", err))
	}
	_ = conn.Close(ctx)
	return s
}

// Scram starts a private PostgreSQL with scram-sha-256 authentication from the
// installed server binaries, in a temp dir on a free port, stopped when the
// test ends. It skips when the binaries are missing, except under CI.
func Scram(t testenv.TB) *Server {
	t.Helper()
	bin := binDir()
	if bin == "" {
		unavailable(t, "no PostgreSQL server binaries (initdb) found")
	}
	dir, err := os.MkdirTemp("", "cloudbridge-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	pwfile := filepath.Join(dir, "pw")
	const superPassword = "superuser-pw"
	if err := os.WriteFile(pwfile, []byte(superPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cred, err := unprivileged(dir)
	if err != nil {
		t.Fatal(err)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=scram-sha-256", "--pwfile="+pwfile, "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := testenv.MustFreePort(t)
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	logf, _ := os.Create(filepath.Join(dir, "postgres.log"))
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatalf("starting postgres: %v", err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = srv.Process.Kill()
		}
		_ = logf.Close()
	})
	s := &Server{Host: "127.0.0.1", Port: port, required: true}
	s.admin = s.DSN("postgres", superPassword, "postgres")
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.admin)
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return s
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres did not accept connections: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CreateLogin creates (or resets) a login role with password and a database
// it owns, as the admin would before storing the credentials.
func (s *Server) CreateLogin(t testenv.TB, role, password, db string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		t.Fatalf("connecting as superuser: %v", err)
	}
	defer conn.Close(ctx)
	id := pgx.Identifier{role}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	// Identifiers and the password literal are escaped by pgx's sanitizer.
	lit := "'" + escapeLiteral(password) + "'"
	if _, err := conn.Exec(ctx, verb+" ROLE "+id+" LOGIN PASSWORD "+lit); err != nil {
		t.Fatalf("%s role: %v", verb, err)
	}
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()+" OWNER "+id); err != nil {
			t.Fatalf("create database: %v", err)
		}
	}
}

// Login connects as user with password to db and returns current_user and
// current_database.
func (s *Server) Login(user, password, db string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN(user, password, db))
	if err != nil {
		return "", "", err
	}
	defer conn.Close(ctx)
	var u, d string
	err = conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&u, &d)
	return u, d, err
}

func escapeLiteral(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func unavailable(t testenv.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (required under CI)", why)
	}
	t.Skip(why)
}

func binDir() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Strings(matches)
	if len(matches) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p)
		}
		return ""
	}
	return filepath.Dir(matches[len(matches)-1])
}

// unprivileged returns the credential to run the server with: the postgres
// user when running as root (postgres refuses root), else nil (ourselves),
// and hands dir to that user.
func unprivileged(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root and there is no postgres user to run the server as")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	for _, f := range []string{"pw"} {
		_ = os.Chown(filepath.Join(dir, f), uid, gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
