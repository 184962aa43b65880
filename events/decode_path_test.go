package events

import (
	"strings"
	"testing"
)

func TestDecodeNamesTheFieldOfABadDuration(t *testing.T) {
	var v struct {
		Name  string `json:"name"`
		Cache struct {
			TTL Duration `json:"ttl"`
		} `json:"cache"`
	}
	err := Decode([]byte(`{"name":"x","cache":{"ttl":"5 minutes"}}`), &v)
	if err == nil || !strings.Contains(err.Error(), `cache.ttl: invalid duration "5 minutes"`) {
		t.Fatalf("got %v", err)
	}
	if AsWire(err).Code != CodeBadRequest {
		t.Fatalf("code %v", AsWire(err).Code)
	}
}

func TestMarshalDoesNotEscapeSubjects(t *testing.T) {
	b, err := Marshal(map[string][]string{"subjects": {"logs.app.>", "a&b<c"}})
	if err != nil || string(b) != `{"subjects":["logs.app.>","a&b<c"]}` {
		t.Fatalf("%s %v", b, err)
	}
}
