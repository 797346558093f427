package token

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

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

// TestVerifyCacheEnforcesExpiry: a token remembered by Verify still ends Leeway after its
// exp, and a token differing from a remembered one only in its signature is still refused.
func TestVerifyCacheEnforcesExpiry(t *testing.T) {
	k := testKeys(t)
	now := time.Now()
	k.now = func() time.Time { return now }
	tok, minted, err := k.Mint("ogp-2027", Attendee, "ana", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if got, err := k.Verify(tok); err != nil || got.ID != minted.ID {
			t.Fatalf("Verify #%d: %+v, %v", i, got, err)
		}
	}
	if len(k.verified) != 1 {
		t.Fatalf("%d tokens remembered, want 1", len(k.verified))
	}
	forged := tok[:len(tok)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(tok, "AA")]
	if _, err := k.Verify(forged); err == nil {
		t.Fatal("a token with another signature passed")
	}

	end := minted.ExpiresAt.Add(Leeway)
	now = end.Add(-time.Second)
	if _, err := k.Verify(tok); err != nil {
		t.Fatalf("Verify a second before the end: %v", err)
	}
	now = end
	_, err = k.Verify(tok)
	var ce *cabildo.Error
	if !errors.As(err, &ce) || ce.Code != cabildo.CodeUnauthorized {
		t.Fatalf("Verify at the end: %v, want unauthorized", err)
	}
	if _, ok := k.verified[tok]; ok {
		t.Fatal("an expired token is still remembered")
	}
	now = end.Add(time.Hour)
	if _, err := k.Verify(tok); err == nil {
		t.Fatal("an expired token passed")
	}
}

// TestVerifyCacheNotBefore: a remembered token is refused again if the clock goes back
// before its iat or nbf (less Leeway), as a fresh verification would.
func TestVerifyCacheNotBefore(t *testing.T) {
	k := testKeys(t)
	now := time.Now()
	k.now = func() time.Time { return now }
	tok, minted, err := k.Mint("ogp-2027", Moderator, "ana", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Verify(tok); err != nil {
		t.Fatal(err)
	}
	now = minted.IssuedAt.Add(-Leeway - time.Second)
	if _, err := k.Verify(tok); err == nil {
		t.Fatal("a token used before it was issued passed")
	}
}

// TestVerifyCacheBounded: the cache never holds more than maxVerified tokens, and Verify
// is safe to call from many goroutines.
func TestVerifyCacheBounded(t *testing.T) {
	k := testKeys(t)
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
	for i := 0; i <= maxVerified; i++ {
		k.remember("tok-"+strconv.Itoa(i), c, time.Now())
	}
	if n := len(k.verified); n > maxVerified || n == 0 {
		t.Fatalf("%d tokens remembered, want 1..%d", n, maxVerified)
	}
	var toks []string
	for i := 0; i < 8; i++ {
		tok, _, err := k.Mint("ogp-2027", Attendee, "a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if _, err := k.Verify(toks[(g+i)%len(toks)]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestVerifyCacheOwnsKey: the text Verify is given may live in a buffer its caller reuses
// (a web framework's request headers); what Verify remembers must not change with it.
func TestVerifyCacheOwnsKey(t *testing.T) {
	k := testKeys(t)
	a, _, _ := k.Mint("ogp-2027", Attendee, "a", time.Hour)
	b, cb, _ := k.Mint("ogp-2027", Attendee, "b", time.Hour)
	buf := []byte(a)
	if _, err := k.Verify(unsafe.String(&buf[0], len(buf))); err != nil {
		t.Fatal(err)
	}
	copy(buf, b) // the caller's next request, in the same buffer
	for tok, v := range k.verified {
		if tok != a || v.claims.Subject != "a" {
			t.Fatalf("remembered %q for %q, want a's token", tok, v.claims.Subject)
		}
	}
	got, err := k.Verify(b)
	if err != nil || got.Subject != "b" || got.ID != cb.ID {
		t.Fatalf("Verify(b) = %+v, %v; want b's claims", got.RegisteredClaims, err)
	}
}
