package config

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadServeDefaults(t *testing.T) {
	c, err := LoadServe(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.DataDir != "data" || c.Demo || c.NATSURL != "" || c.RedisURL != "" ||
		c.StreamReplicas != 1 || c.SigningKeyFile != filepath.Join("data", "signing.key") || c.ChangeHistory != 100_000 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestLoadServeEnvAndFlags(t *testing.T) {
	c, err := LoadServe([]string{"--addr", "127.0.0.1:9000", "--demo"}, envOf(map[string]string{
		"CABILDO_ADDR":            "127.0.0.1:1", // a flag wins over the environment
		"CABILDO_REDIS_URL":       "redis://127.0.0.1:6379/0",
		"CABILDO_STREAM_REPLICAS": "3",
		"CABILDO_SNAPSHOT_EVERY":  "1m",
		"CABILDO_DATA_DIR":        "/var/lib/cabildo",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9000" || !c.Demo || c.RedisURL != "redis://127.0.0.1:6379/0" || c.StreamReplicas != 3 ||
		c.SnapshotEvery != time.Minute || c.SigningKeyFile != "/var/lib/cabildo/signing.key" {
		t.Fatalf("loaded %+v", c)
	}
}

func TestLoadServeRejects(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad addr", []string{"--addr", "8080"}, nil, "--addr"},
		{"bad redis url", []string{"--redis-url", "http://x"}, nil, "--redis-url"},
		{"replicas", []string{"--stream-replicas", "2"}, nil, "--stream-replicas"},
		{"listen with external nats", []string{"--nats-url", "nats://127.0.0.1:4222", "--nats-listen", "127.0.0.1:4223"}, nil, "--nats-listen"},
		{"log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"tiny dedupe", []string{"--dedupe-window", "10ms"}, nil, "--dedupe-window"},
		{"history", []string{"--change-history", "0"}, nil, "--change-history"},
		{"bad env value", nil, map[string]string{"CABILDO_DEMO": "maybe"}, "CABILDO_DEMO"},
		{"stray argument", []string{"extra"}, nil, "unexpected arguments"},
		{"unknown flag", []string{"--frobnicate"}, nil, "frobnicate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadServe(tc.args, envOf(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLoadToken(t *testing.T) {
	c, err := LoadToken([]string{"--event", "ogp-2027", "--role", "moderator", "--data-dir", "d"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Event != "ogp-2027" || c.Role != "moderator" || c.TTL != 72*time.Hour || c.SigningKeyFile != filepath.Join("d", "signing.key") {
		t.Fatalf("loaded %+v", c)
	}
	if _, err := LoadToken(nil, envOf(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--event") {
		t.Fatalf("missing --event: %v", err)
	}
	if _, err := LoadToken([]string{"--event", "e1", "--ttl", "2400h"}, envOf(nil), io.Discard); err == nil {
		t.Fatal("accepted a 100-day token")
	}
}
