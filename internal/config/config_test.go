package config

import (
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadServeDefaults(t *testing.T) {
	c, err := LoadServe(nil, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8080" || c.DataDir != "data" || c.Demo || c.NATSURL != "" || c.RedisURL != "" ||
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
	}))
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
		{"stray argument", []string{"extra"}, nil, `unexpected argument "extra"`},
		{"unknown flag", []string{"--frobnicate"}, nil, "cabildo serve: unknown flag --frobnicate (see 'cabildo serve --help')"},
		{"duration without unit", []string{"--snapshot-every", "30"}, nil, `--snapshot-every: "30" is not a duration; use a unit, such as 72h or 30m`},
		{"duration in env", nil, map[string]string{"CABILDO_WS_PING": "25"}, `CABILDO_WS_PING: "25" is not a duration`},
		{"ping", []string{"--ws-ping", "0"}, nil, "cabildo serve: --ws-ping must be > 0"},
		{"idle", []string{"--ws-idle-timeout", "10s"}, nil, "--ws-idle-timeout must be longer than --ws-ping"},
		{"queue", []string{"--ws-queue-bytes", "100"}, nil, "--ws-queue-bytes must be at least 4096"},
		{"votes", []string{"--qa-votes-per-minute", "0"}, nil, "--qa-votes-per-minute must be at least 1"},
		{"vote interval", []string{"--qa-vote-interval", "0s"}, nil, "--qa-vote-interval must be > 0"},
		{"vote queue", []string{"--qa-vote-queue", "0"}, nil, "--qa-vote-queue must be at least 1"},
		{"vote wait", []string{"--qa-vote-wait", "0s"}, nil, "--qa-vote-wait must be > 0"},
		{"grace", []string{"--shutdown-grace", "0s"}, nil, "--shutdown-grace must be > 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadServe(tc.args, envOf(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %#v, want a *UsageError (exit status 2)", err)
			}
		})
	}
}

func TestLoadToken(t *testing.T) {
	c, err := LoadToken([]string{"--event", "ogp-2027", "--role", "moderator", "--data-dir", "d"}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Event != "ogp-2027" || c.Role != "moderator" || c.TTL != 72*time.Hour || c.SigningKeyFile != filepath.Join("d", "signing.key") {
		t.Fatalf("loaded %+v", c)
	}
	if _, err := LoadToken(nil, envOf(nil)); err == nil || !strings.Contains(err.Error(), "--event") {
		t.Fatalf("missing --event: %v", err)
	}
	if _, err := LoadToken([]string{"--event", "e1", "--ttl", "2400h"}, envOf(nil)); err == nil {
		t.Fatal("accepted a 100-day token")
	}
}

// TestHelpPrintsNothing: -h and --help are flag.ErrHelp and nothing more; the command prints
// its help on stdout (the flag package used to print it, and every error, on stderr).
func TestHelpPrintsNothing(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		if _, err := LoadServe([]string{arg}, envOf(nil)); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("serve %s: %v, want flag.ErrHelp", arg, err)
		}
		if _, err := LoadToken([]string{arg}, envOf(nil)); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("token create %s: %v, want flag.ErrHelp", arg, err)
		}
	}
}

func TestLoadTokenRejects(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--event", "e1", "--ttl", "5"}, `cabildo token create: --ttl: "5" is not a duration; use a unit, such as 72h or 30m`},
		{[]string{"--event", "e1", "--ttl", "2400h"}, "cabildo token create: --ttl must be between 1s and 90 days (2160h)"},
		{nil, "cabildo token create: --event is required"},
	}
	for _, tc := range tests {
		_, err := LoadToken(tc.args, envOf(nil))
		var ue *UsageError
		if !errors.As(err, &ue) || err.Error() != tc.want {
			t.Errorf("LoadToken(%q) = %v, want usage error %q", tc.args, err, tc.want)
		}
	}
}
