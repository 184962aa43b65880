package events

import "encoding/json"

// NameRequest is the body of get and delete requests.
type NameRequest struct {
	Name string `json:"name"`
}

// Empty is the body of replies and requests that carry nothing.
type Empty struct{}

// ConnectionList is the reply to admin.connections.list.
type ConnectionList struct {
	Connections []Connection `json:"connections"`
}

// SecretPut is the body of admin.secrets.put: Value is a JSON object or a string.
type SecretPut struct {
	Connection string          `json:"connection"`
	Name       string          `json:"name"`
	Value      json.RawMessage `json:"value"`
}

// MaxBuiltinSecretSize bounds a built-in secret value.
const MaxBuiltinSecretSize = 60 << 10

// Validate checks the request.
func (r *SecretPut) Validate() error {
	if err := CheckName("connection", r.Connection); err != nil {
		return err
	}
	if err := CheckBuiltinSecretName("name", r.Name); err != nil {
		return err
	}
	if len(r.Value) == 0 || string(r.Value) == "null" {
		return Errorf(CodeBadRequest, "value: required (a JSON object or a string)")
	}
	if len(r.Value) > MaxBuiltinSecretSize {
		return Errorf(CodeTooLarge, "value: larger than %d bytes", MaxBuiltinSecretSize)
	}
	// A value that is valid JSON starting with { or " is an object or a
	// string, which decodes into a map or a string without fail: checked
	// for validity alone, without decoding it (a copy of every string).
	switch r.Value[0] {
	case '{':
		if !json.Valid(r.Value) {
			return Errorf(CodeBadRequest, "value: invalid JSON object")
		}
	case '"':
		if !json.Valid(r.Value) {
			return Errorf(CodeBadRequest, "value: invalid JSON string")
		}
	default:
		return Errorf(CodeBadRequest, "value: must be a JSON object or a string")
	}
	return nil
}

// SecretRef names one built-in secret: the body of admin.secrets.delete.
type SecretRef struct {
	Connection string `json:"connection"`
	Name       string `json:"name"`
}

// Validate checks the request.
func (r *SecretRef) Validate() error {
	if err := CheckName("connection", r.Connection); err != nil {
		return err
	}
	return CheckBuiltinSecretName("name", r.Name)
}

// SecretListRequest is the body of admin.secrets.list.
type SecretListRequest struct {
	Connection string `json:"connection"`
}

// SecretNames is the reply to admin.secrets.list: names only, never values.
type SecretNames struct {
	Names []string `json:"names"`
}

// ExportList is the reply to admin.exports.list.
type ExportList struct {
	Exports []Export `json:"exports"`
}

// RekeyReply is the reply to admin.rekey.
type RekeyReply struct {
	// Resealed counts the records re-sealed under the current key.
	Resealed int `json:"resealed"`
	// Failed lists the records that could not be opened (sealed under a key
	// this worker lacks, tampered, or replayed), so not re-sealed: connection
	// names, and <connection>.<secret> for built-in secrets. An admin may
	// delete or put them again. Always present, empty when all went well.
	Failed []string `json:"failed"`
	// Current is the key id sealing new records (and every record re-sealed).
	Current string `json:"current"`
}

// InvalidateRequest is the body of the invalidate broadcast.
type InvalidateRequest struct {
	Connection string `json:"connection"`
	// Secret, when set, drops only that secret's entries.
	Secret string `json:"secret,omitempty"`
	// Refresh, with Secret, says the secret changed in the cloud (a rotation
	// event): each worker that had it cached re-reads it in the background,
	// keeping the old value only as its max_stale fallback.
	Refresh bool `json:"refresh,omitempty"`
}

// Validate checks the request.
func (r *InvalidateRequest) Validate() error {
	if err := CheckName("connection", r.Connection); err != nil {
		return err
	}
	if r.Refresh && r.Secret == "" {
		return Errorf(CodeBadRequest, "refresh: needs secret")
	}
	if r.Secret != "" {
		return CheckSecretName("secret", r.Secret)
	}
	return nil
}
