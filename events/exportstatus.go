package events

import "time"

// VerbStatus asks for the health of export blocks: admin.exports.status.
const VerbStatus = "status"

// BucketExportStatus is the KV bucket where every worker keeps one record per
// export block it runs (its counters and last outcome), so any worker can
// answer admin.exports.status for all of them: cloudbridge_export_status.
const BucketExportStatus = "export_status"

// AdminExportsStatus is the subject of the export health request
// (ExportStatusRequest, reply ExportStatusList).
func (s Subjects) AdminExportsStatus() string { return s.Admin(ResourceExports, VerbStatus) }

// ExportStatusRequest asks for the health of one export block, or of every
// block when Name is empty.
type ExportStatusRequest struct {
	Name string `json:"name,omitempty"`
}

// Validate checks the name when one is given.
func (r *ExportStatusRequest) Validate() error {
	if r.Name == "" {
		return nil
	}
	return CheckName("name", r.Name)
}

// ExportStatusList is the reply to admin.exports.status, by export name.
type ExportStatusList struct {
	Exports []ExportStatus `json:"exports"`
}

// ExportStatus is the health of one export block across the workers.
type ExportStatus struct {
	Export string `json:"export"`
	// Workers is how many workers reported running the block recently.
	Workers int `json:"workers"`
	// Lag is what the export still has to deliver: Pending plus AckPending
	// of its durable consumer (cloudbridge_export_consumer_lag).
	Lag        uint64 `json:"lag"`
	Pending    uint64 `json:"pending"`
	AckPending uint64 `json:"ack_pending"`
	// LastDelivery is when a sink call of the block last succeeded.
	LastDelivery *time.Time `json:"last_delivery,omitempty"`
	// LastError is the block's most recent failed call, if it failed since
	// its last delivery.
	LastError *ExportError `json:"last_error,omitempty"`
	// Retries counts the retried calls of the workers' current runs.
	Retries uint64 `json:"retries"`
	// DeadLetters is how many of its dead letters the dead-letter stream holds.
	DeadLetters uint64 `json:"dead_letters"`
}

// ExportError is a failed sink call, for operators (admin subjects only).
type ExportError struct {
	Time time.Time `json:"time"`
	Code Code      `json:"code"`
	// Message is the classified error; Cause the underlying error's text
	// (network error, the cloud's message).
	Message  string `json:"message"`
	Cause    string `json:"cause,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
}
