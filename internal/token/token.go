// Package token mints and verifies Cabildo's signed bearer tokens: organizer and moderator
// tokens minted by the CLI, scoped to one event, and (later) anonymous attendee tokens.
// Each kind has its own "typ" so one can never pass for another; the signing algorithm is
// allow-listed and exp, iss and aud are required.
package token

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// Role is what a token lets its bearer do, and its token type.
type Role string

const (
	Organizer Role = "organizer"
	Moderator Role = "moderator"
	Attendee  Role = "attendee"
)

// ParseRole accepts the roles the CLI mints.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Organizer, Moderator:
		return r, nil
	}
	return "", fmt.Errorf("token: role must be organizer or moderator, not %q", s)
}

const (
	issuer   = "cabildo"
	audience = "cabildo-api"
	// KeyFile is the signing key's file name inside the data directory.
	KeyFile = "signing.key"
	minKey  = 32
)

// ForeignKeyMessage is what a client is told about a token signed with another key.
const ForeignKeyMessage = "the bearer token is signed with a different key than this server's (--data-dir / --signing-key)"

// Leeway is the clock skew tolerated on a token's times; a token ends Leeway after its exp.
const Leeway = 5 * time.Second

// Claims are what a Cabildo token says.
type Claims struct {
	Event string `json:"event"`
	Type  Role   `json:"typ"`
	Name  string `json:"name,omitempty"`
	jwt.RegisteredClaims
}

// Keys signs and verifies tokens with one HMAC-SHA256 key.
type Keys struct {
	key []byte
	now func() time.Time

	// verified remembers tokens that passed Verify, by their exact text, with the times
	// between which they stay valid: every vote carries the same attendee token, and parsing
	// and signing it again each time was the costliest part of a vote request. The text
	// includes the signature and the key never changes, so a token found here is one that
	// passed every check; only its times are checked again.
	mu       sync.Mutex
	verified map[string]verifiedToken
}

// verifiedToken is a token that passed Verify: its claims and the span in which it stays
// valid (from its nbf and iat, less Leeway, until its exp plus Leeway).
type verifiedToken struct {
	claims    Claims
	notBefore time.Time
	expires   time.Time
}

// maxVerified bounds the verification cache; when full, the expired entries go first, then
// an arbitrary half of the rest (they are verified again on their next use).
const maxVerified = 32768

// New returns Keys for a key of at least 32 bytes.
func New(key []byte) (*Keys, error) {
	if len(key) < minKey {
		return nil, fmt.Errorf("token: signing key must be at least %d bytes, got %d", minKey, len(key))
	}
	return &Keys{key: key, now: time.Now}, nil
}

// ParseKey decodes a hex-encoded key, as found in the key file or the environment.
func ParseKey(s string) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("token: signing key is not hex: %w", err)
	}
	if len(k) < minKey {
		return nil, fmt.Errorf("token: signing key must be at least %d bytes", minKey)
	}
	return k, nil
}

// LoadKeyFile reads the hex key at path; a missing file is an error wrapping
// os.ErrNotExist. `token create` uses it: a key it made up would sign tokens no server
// accepts.
func LoadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token: read key: %w", err)
	}
	return ParseKey(string(b))
}

// LoadOrCreateKeyFile reads the hex key at path, creating it with a fresh random key
// (mode 0600) the first time: `serve` does, so a node's first start makes the key that
// `token create` then reads from the same data directory.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	key, err := LoadKeyFile(path)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("token: create key dir: %w", err)
	}
	key = make([]byte, minKey)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("token: generate key: %w", err)
	}
	// Written whole to a temporary file, then linked into place: the link fails if
	// another process got there first, and nobody ever reads a half-written key.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".signing-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("token: create key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("token: create key: %w", err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("token: write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("token: write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("token: write key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return LoadOrCreateKeyFile(path) // another process created it first; use theirs
	} else if err != nil {
		return nil, fmt.Errorf("token: create key: %w", err)
	}
	return key, nil
}

// Mint signs a token for one event and role, valid for ttl.
func (k *Keys) Mint(event string, role Role, subject string, ttl time.Duration) (string, Claims, error) {
	return k.mint(event, role, subject, "", ttl)
}

// MintAttendee signs an anonymous attendee identity: a fresh random subject, the display
// name the attendee chose (if any), nothing else about them.
func (k *Keys) MintAttendee(event, name string, ttl time.Duration) (string, Claims, error) {
	return k.mint(event, Attendee, uuid.NewString(), name, ttl)
}

func (k *Keys) mint(event string, role Role, subject, name string, ttl time.Duration) (string, Claims, error) {
	if !cabildo.ValidSlug(event) {
		return "", Claims{}, fmt.Errorf("token: %q is not an event id", event)
	}
	if ttl <= 0 {
		return "", Claims{}, fmt.Errorf("token: ttl must be positive")
	}
	now := k.now()
	c := Claims{Event: event, Type: role, Name: name, RegisteredClaims: jwt.RegisteredClaims{
		Issuer: issuer, Audience: jwt.ClaimStrings{audience}, Subject: subject,
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)), ID: uuid.NewString(),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(k.key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("token: sign: %w", err)
	}
	return s, c, nil
}

// Verify checks a token's signature, algorithm, issuer, audience and expiry. The error
// says which check failed only for a well-formed HS256 token whose signature does not
// match this server's key: a forger learns nothing from that (only the key signs), while an
// operator learns the commonest setup mistake, a token minted with another data directory
// or key. Every other failure reads the same.
func (k *Keys) Verify(tok string) (Claims, error) {
	now := k.now()
	k.mu.Lock()
	v, ok := k.verified[tok]
	k.mu.Unlock()
	if ok && !now.Before(v.notBefore) && now.Before(v.expires) {
		return v.claims, nil
	}
	c, err := k.verify(tok)
	if err == nil {
		k.remember(tok, c, now)
	} else if ok {
		k.mu.Lock()
		delete(k.verified, tok)
		k.mu.Unlock()
	}
	return c, err
}

func (k *Keys) remember(tok string, c Claims, now time.Time) {
	if c.ExpiresAt == nil { // required by verify; never cache a token without an end
		return
	}
	v := verifiedToken{claims: c, expires: c.ExpiresAt.Add(Leeway)}
	for _, t := range []*jwt.NumericDate{c.NotBefore, c.IssuedAt} {
		if t != nil && t.Add(-Leeway).After(v.notBefore) {
			v.notBefore = t.Add(-Leeway)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.verified == nil {
		k.verified = make(map[string]verifiedToken)
	}
	if len(k.verified) >= maxVerified {
		for t, e := range k.verified {
			if !now.Before(e.expires) {
				delete(k.verified, t)
			}
		}
		for t := range k.verified {
			if len(k.verified) < maxVerified/2 {
				break
			}
			delete(k.verified, t)
		}
	}
	// The caller's string may alias a buffer it reuses (fiber's request headers do): the
	// key is a copy of its own.
	k.verified[strings.Clone(tok)] = v
}

func (k *Keys) verify(tok string) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return k.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer), jwt.WithAudience(audience), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithLeeway(Leeway), jwt.WithTimeFunc(k.now))
	if err == nil && (!cabildo.ValidSlug(c.Event) || (c.Type != Organizer && c.Type != Moderator && c.Type != Attendee)) {
		err = errors.New("token: bad claims")
	}
	if errors.Is(err, jwt.ErrSignatureInvalid) {
		return Claims{}, &cabildo.Error{Code: cabildo.CodeUnauthorized, Message: ForeignKeyMessage, Err: err}
	}
	if err != nil {
		return Claims{}, &cabildo.Error{Code: cabildo.CodeUnauthorized, Message: "the bearer token is not valid", Err: err}
	}
	return c, nil
}
