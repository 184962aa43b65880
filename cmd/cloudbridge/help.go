package main

// The detailed help of each verb (kong prints it under the one-line summary
// in 'cloudbridge VERB --help'): what it does, and an example. Indented lines
// are printed as they are.

func (*serveCmd) Help() string {
	return `Serves resolve, test, token, invalidate, the admin verbs and log export over NATS. Several workers
on one NATS share the work (a queue group). Stop it with SIGTERM or Ctrl-C: it finishes requests
within --shutdown-timeout.

Examples:

    cloudbridge serve                      # embedded NATS on 127.0.0.1:4333, data in ./data
    cloudbridge serve --nats-url nats://127.0.0.1:4333 --master-key-file ./data/master.key --http-addr off`
}

func (*connPutCmd) Help() string {
	return `The file holds one connection object (name, provider, groups, secrets, and the provider's
block); putting a name again replaces it. Example:

    cloudbridge conn put -f local-bio.json`
}

func (*connGetCmd) Help() string {
	return "Example:\n\n    cloudbridge conn get local-bio --json"
}

func (*connLsCmd) Help() string {
	return "One row per connection: provider, groups, secrets allowlist, cache TTL. Example:\n\n    cloudbridge conn ls"
}

func (*connRmCmd) Help() string {
	return "Example:\n\n    cloudbridge conn rm local-bio"
}

func (*connTestCmd) Help() string {
	return `Runs each step (credentials, identity, and with --secret the secret and its --keys) as GROUP
would, and prints one row per step; exits 1 when a step fails. Example:

    cloudbridge conn test bio local-bio --secret biodb01 --keys login,password`
}

func (*secretPutCmd) Help() string {
	return `Only for a connection of provider builtin; the value is sealed under the workers' master key.
Examples:

    cloudbridge secret put local-bio biodb01 login=user01 password=password01
    cloudbridge secret put local-bio api-key               # prompts, input hidden
    cloudbridge secret put local-bio cfg --from-file cfg.json`
}

func (*secretLsCmd) Help() string {
	return "Example:\n\n    cloudbridge secret ls local-bio"
}

func (*secretRmCmd) Help() string {
	return "Example:\n\n    cloudbridge secret rm local-bio biodb01"
}

func (*exportPutCmd) Help() string {
	return `The file holds one export block (name, connection, subjects, and a cloudwatch or cloud_logging
sink); putting a name again replaces it. Example:

    cloudbridge export put -f cw-app.json`
}

func (*exportGetCmd) Help() string {
	return "Shows the block and its health (lag, last delivery, retries, dead letters, last error). Example:\n\n    cloudbridge export get cw-app"
}

func (*exportLsCmd) Help() string {
	return "One row per block, with its health. Example:\n\n    cloudbridge export ls"
}

func (*exportRmCmd) Help() string {
	return "Its dead letters stay ('cloudbridge dead ls NAME'). Example:\n\n    cloudbridge export rm cw-app"
}

func (*deadLsCmd) Help() string {
	return `An export that exists and has none prints "no dead letters of EXPORT"; a name that is neither an
export nor has dead letters is not_found (exit 13). Example:

    cloudbridge dead ls cw-app --reason too_old --since 1h`
}

func (*deadShowCmd) Help() string {
	return "Example:\n\n    cloudbridge dead show cw-app 42"
}

func (*deadReplayCmd) Help() string {
	return `Every export whose subjects match sees a replayed event again: fix the cause first (dead ls shows
the reason). Example:

    cloudbridge dead replay cw-app --reason too_old`
}

func (*deadPurgeCmd) Help() string {
	return "Example:\n\n    cloudbridge dead purge cw-app --since 2026-12-01T10:00:00Z"
}

func (*resolveCmd) Help() string {
	return `Asks the workers as GROUP (one of the connection's groups) for the secret's credentials, and prints
them. Examples:

    cloudbridge resolve bio local-bio biodb01
    cloudbridge resolve bio local-bio biodb01 --keys login --json`
}

func (*tokenCmd) Help() string {
	return `AWS: temporary credentials of the connection's role; GCP: an OAuth access token. Example:

    cloudbridge token ops gcp-ops --scopes https://www.googleapis.com/auth/cloud-platform --duration 30m`
}

func (*invalidateCmd) Help() string {
	return `Use after changing a secret outside cloudbridge; an unknown connection is not_found, a secret
no worker has cached is not an error (nothing to drop). Examples:

    cloudbridge invalidate aws-prod
    cloudbridge invalidate aws-prod biodb01`
}

func (*rekeyCmd) Help() string {
	return "Exits 1 when some records could not be re-sealed (it names them). Example:\n\n    cloudbridge admin rekey"
}

func (*logsSendCmd) Help() string {
	return `Waits for JetStream's ack of each event and says how many were stored. Examples:

    cloudbridge logs send logs.app.web '{"level":"info","msg":"hello"}'
    tail -f app.log | cloudbridge logs send logs.app.web -`
}

func (*auditTailCmd) Help() string {
	return `Columns: time, op, group, connection, secret, outcome, latency, fingerprint, request id (--json: one
event per line). Examples:

    cloudbridge audit tail --group bio --op resolve
    cloudbridge audit tail --last 20 --count 20`
}

func (*auditFingerprintCmd) Help() string {
	return "Example:\n\n    cloudbridge audit fingerprint local-bio biodb01"
}

func (*healthCmd) Help() string {
	return "Example (the container's health check):\n\n    cloudbridge health --http-addr 127.0.0.1:9464 --timeout 2s"
}

func (*versionCmd) Help() string {
	return "Example:\n\n    cloudbridge version --json"
}
