package token

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cabildo/cabildo/internal/cabildo"
)

func testKeys(t *testing.T) *Keys {
	t.Helper()
	k, err := New([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMintVerify(t *testing.T) {
	k := testKeys(t)
	tok, minted, err := k.Mint("ogp-2027", Organizer, "ana", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Event != "ogp-2027" || got.Type != Organizer || got.Subject != "ana" || got.ID != minted.ID || got.ID == "" {
		t.Fatalf("claims %+v, want event ogp-2027, organizer, ana, jti %s", got, minted.ID)
	}
}

// sign signs arbitrary claims with a method and key, to forge what an attacker could.
func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifyRejects is the negative suite of scenario 21: every forged or mis-scoped token
// is refused with the same unauthorized error.
func TestVerifyRejects(t *testing.T) {
	k := testKeys(t)
	now := time.Now()
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"event": "ogp-2027", "typ": "organizer", "iss": issuer, "aud": []string{audience},
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	key := []byte(strings.Repeat("k", 32))
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good())
	tests := []struct {
		name string
		tok  string
	}{
		{"empty", ""},
		{"garbage", "not.a.token"},
		{"alg none", none},
		{"other key", sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), good())},
		{"HS512", sign(t, jwt.SigningMethodHS512, key, good())},
		{"expired", sign(t, jwt.SigningMethodHS256, key, with("exp", now.Add(-time.Minute).Unix()))},
		{"no exp", sign(t, jwt.SigningMethodHS256, key, with("exp", nil))},
		{"future iat", sign(t, jwt.SigningMethodHS256, key, with("iat", now.Add(time.Hour).Unix()))},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, key, with("nbf", now.Add(time.Hour).Unix()))},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, key, with("iss", "someone"))},
		{"no issuer", sign(t, jwt.SigningMethodHS256, key, with("iss", nil))},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, key, with("aud", []string{"other-api"}))},
		{"wrong typ", sign(t, jwt.SigningMethodHS256, key, with("typ", "admin"))},
		{"no typ", sign(t, jwt.SigningMethodHS256, key, with("typ", nil))},
		{"bad event", sign(t, jwt.SigningMethodHS256, key, with("event", "../other"))},
		{"tampered", func() string {
			tok, _, _ := k.Mint("ogp-2027", Moderator, "m", time.Hour)
			parts := strings.Split(tok, ".")
			forged := sign(t, jwt.SigningMethodHS256, key, good())
			return parts[0] + "." + strings.Split(forged, ".")[1] + "." + parts[2]
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Verify(tc.tok)
			if got := cabildo.ErrorCode(err); got != cabildo.CodeUnauthorized {
				t.Fatalf("Verify = %v (code %q), want unauthorized", err, got)
			}
			var ce *cabildo.Error
			if e, ok := err.(*cabildo.Error); ok {
				ce = e
			}
			// Only a signature that does not match this key is named: it tells an operator
			// the token came from another data directory or key, and a forger nothing.
			if tc.name == "other key" || tc.name == "tampered" {
				if ce == nil || ce.Message != ForeignKeyMessage {
					t.Fatalf("client message %q, want %q", ce.Message, ForeignKeyMessage)
				}
				return
			}
			if ce == nil || strings.Contains(ce.Message, "exp") || strings.Contains(ce.Message, "sign") {
				t.Fatalf("client message %q must not say which check failed", ce.Message)
			}
		})
	}
}

// TestLoadKeyFileNeverCreates: token create reads the key serve made; a missing file is
// os.ErrNotExist, and stays missing.
func TestLoadKeyFileNeverCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", KeyFile)
	if _, err := LoadKeyFile(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadKeyFile(missing) = %v, want os.ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadKeyFile created %s", filepath.Dir(path))
	}
	made, err := LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := LoadKeyFile(path); err != nil || string(got) != string(made) {
		t.Fatalf("LoadKeyFile = %x, %v; want the key serve made", got, err)
	}
}

func TestMintRefuses(t *testing.T) {
	k := testKeys(t)
	if _, _, err := k.Mint("Not An Event", Organizer, "", time.Hour); err == nil {
		t.Error("minted a token for an invalid event id")
	}
	if _, _, err := k.Mint("ogp-2027", Organizer, "", 0); err == nil {
		t.Error("minted a token without a lifetime")
	}
	if _, err := New([]byte("short")); err == nil {
		t.Error("accepted a 5-byte key")
	}
}

func TestParseRole(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Role
		ok   bool
	}{{"organizer", Organizer, true}, {"moderator", Moderator, true}, {"attendee", "", false}, {"", "", false}} {
		got, err := ParseRole(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseRole(%q) = %q, %v", tc.in, got, err)
		}
	}
}

// TestKeyFile: serve and token create agree because both load or create the same file,
// even when they race at first start.
func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", KeyFile)
	var (
		wg   sync.WaitGroup
		keys [8][]byte
		errs [8]error
	)
	for i := range keys {
		wg.Add(1)
		go func() { defer wg.Done(); keys[i], errs[i] = LoadOrCreateKeyFile(path) }()
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil {
			t.Fatalf("LoadOrCreateKeyFile: %v", errs[i])
		}
		if string(keys[i]) != string(keys[0]) || len(keys[i]) < 32 {
			t.Fatalf("callers got different keys")
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := LoadOrCreateKeyFile(path)
	if err != nil || string(again) != string(keys[0]) {
		t.Fatalf("reload gave another key (%v)", err)
	}
	if err := os.WriteFile(path, []byte("zz"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeyFile(path); err == nil {
		t.Error("a corrupt key file was accepted")
	}
}
