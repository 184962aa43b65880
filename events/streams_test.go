package events

import "testing"

func TestStreamBucketConsumerNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Subjects{}.LogsStream(), "CLOUDBRIDGE_LOGS"},
		{Subjects{}.DeadStream(), "CLOUDBRIDGE_DEAD"},
		{Subjects{Prefix: "cloudbridge"}.Bucket(BucketConnections), "cloudbridge_connections"},
		{Subjects{}.Bucket(BucketSecrets), "cloudbridge_secrets"},
		{Subjects{}.Bucket(BucketExports), "cloudbridge_exports"},
		{Subjects{Prefix: "acme.cb"}.LogsStream(), "ACME_CB_LOGS"},
		{Subjects{Prefix: "acme.cb"}.DeadStream(), "ACME_CB_DEAD"},
		{Subjects{Prefix: "acme.cb"}.Bucket(BucketConnections), "acme_cb_connections"},
		{ExportConsumer("cw-info"), "cloudbridge-export-cw-info"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
