package events

import "time"

// DeadQuery selects the dead letters of an export: the body of
// admin.dead.list, admin.dead.replay and admin.dead.purge.
type DeadQuery struct {
	Export string `json:"export"`
	// Reason keeps only dead letters with this reason.
	Reason string `json:"reason,omitempty"`
	// Since keeps only dead letters written at or after this time.
	Since *time.Time `json:"since,omitempty"`
}

// DeadReasons are the reasons a dead letter can have.
func DeadReasons() []string {
	return []string{DeadTooLarge, DeadTooOld, DeadExpired, DeadInvalid, DeadRejected, DeadUndeliverable}
}

// Validate checks the query.
func (q DeadQuery) Validate() error {
	if err := CheckName("export", q.Export); err != nil {
		return err
	}
	if q.Reason != "" {
		ok := false
		for _, r := range DeadReasons() {
			ok = ok || r == q.Reason
		}
		if !ok {
			return Errorf(CodeBadRequest, "reason: %q is not one of %v", truncate(q.Reason, 40), DeadReasons())
		}
	}
	return nil
}

// Matches reports whether a dead letter is selected by the query.
func (q DeadQuery) Matches(dl DeadLetter) bool {
	return (q.Reason == "" || dl.Reason == q.Reason) && (q.Since == nil || !dl.Time.Before(*q.Since))
}

// DeadRef names one dead letter: the body of admin.dead.get. Seq is the
// event's sequence in the log stream (DeadLetter.Seq).
type DeadRef struct {
	Export string `json:"export"`
	Seq    uint64 `json:"seq"`
}

// Validate checks the reference.
func (r DeadRef) Validate() error {
	if err := CheckName("export", r.Export); err != nil {
		return err
	}
	if r.Seq == 0 {
		return Errorf(CodeBadRequest, "seq: required, at least 1")
	}
	return nil
}

// DeadSummary is a dead letter without its payload, in a listing.
type DeadSummary struct {
	Seq     uint64    `json:"seq"`
	Subject string    `json:"subject"`
	Reason  string    `json:"reason"`
	Detail  string    `json:"detail,omitempty"`
	Size    int       `json:"size"`
	Time    time.Time `json:"time"`
}

// DeadList is the reply to admin.dead.list, oldest first.
type DeadList struct {
	Export      string        `json:"export"`
	DeadLetters []DeadSummary `json:"dead_letters"`
	// Truncated is true when more dead letters matched than the reply holds.
	Truncated bool `json:"truncated,omitempty"`
}

// MaxDeadList bounds the dead letters of one listing.
const MaxDeadList = 1000

// DeadResult is the reply to admin.dead.replay (Count replayed) and
// admin.dead.purge (Count removed).
type DeadResult struct {
	Export string `json:"export"`
	Count  int    `json:"count"`
	// More is true when more dead letters matched than one request handles:
	// ask again.
	More bool `json:"more,omitempty"`
}
