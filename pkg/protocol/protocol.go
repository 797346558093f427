// Package protocol is Cabildo's realtime wire protocol: the JSON text frames exchanged on
// the one websocket endpoint GET /v1/ws, their error codes and the close codes. It uses
// only the standard library, so any Go client can depend on it; mobile-api/asyncapi.yaml
// is the same protocol for everyone else.
//
// A client authenticates (optionally) with an auth frame, then subscribes to channels.
// Each channel is a sequence of versions: a subscription starts with a snapshot (the
// channel's state at a version) or, when resuming with since, with the updates missed
// since that version. Every update carries its version and prev, the channel's version
// before it, so a client can check that it missed nothing: each update's prev equals the
// last version it saw.
//
// No frame is over 64 KiB in either direction. A snapshot too big for one frame comes in
// parts: snapshot frames with Part, Parts and Chunk instead of Data, which Parts joins
// back into the one snapshot they stand for.
package protocol

import "encoding/json"

// Client frame types.
const (
	TypeAuth        = "auth"        // {token}
	TypeSubscribe   = "subscribe"   // {channel, since?, lang?}
	TypeUnsubscribe = "unsubscribe" // {channel}
	TypePing        = "ping"
)

// Server frame types.
const (
	TypeAuthOK       = "auth_ok"      // the token was accepted
	TypeSnapshot     = "snapshot"     // {channel, version, data}, or {channel, version, part, parts, chunk}
	TypeSubscribed   = "subscribed"   // {channel, version}: live from version on (after the snapshot or missed updates)
	TypeUpdate       = "update"       // {channel, version, prev, data}
	TypeUnsubscribed = "unsubscribed" // {channel}: on request, or when access ended
	TypeError        = "error"        // {code, message, channel?, id?}
	TypePong         = "pong"
)

// ClientFrame is any frame a client sends. ID, when set, is echoed in the reply or error
// the frame causes, so a client can match them.
type ClientFrame struct {
	Type    string  `json:"type"`
	ID      uint64  `json:"id,omitempty"`
	Token   string  `json:"token,omitempty"`
	Channel string  `json:"channel,omitempty"`
	Since   *uint64 `json:"since,omitempty"`
	Lang    string  `json:"lang,omitempty"`
}

// ServerFrame is any frame the server sends.
type ServerFrame struct {
	Type    string  `json:"type"`
	ID      uint64  `json:"id,omitempty"`
	Channel string  `json:"channel,omitempty"`
	Version uint64  `json:"version,omitempty"`
	Prev    *uint64 `json:"prev,omitempty"`
	// Part, Parts and Chunk are set on the frames of a snapshot in parts, which carry no
	// Data: see Parts.
	Part    int             `json:"part,omitempty"`
	Parts   int             `json:"parts,omitempty"`
	Chunk   string          `json:"chunk,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
}

// Error codes in error frames. An error frame leaves the connection open; repeated abuse
// closes it with a close code.
const (
	ErrBadFrame             = "bad_frame"              // not a JSON object of a known shape
	ErrUnknownType          = "unknown_type"           // a type this protocol does not have
	ErrUnknownChannel       = "unknown_channel"        // malformed name, or no such event
	ErrChannelNameTooLong   = "channel_name_too_long"  // over MaxChannelName bytes
	ErrUnauthorized         = "unauthorized"           // the token is not valid
	ErrForbidden            = "forbidden"              // the channel needs another role or event
	ErrTooManySubscriptions = "too_many_subscriptions" // over the per-connection limit
	ErrAlreadySubscribed    = "already_subscribed"
	ErrNotSubscribed        = "not_subscribed"
	ErrRateLimited          = "rate_limited"  // frames over the per-connection rate
	ErrTokenExpired         = "token_expired" // the token that allowed a subscription expired: it ended
)

// Close codes. 1000-1015 are the websocket standard's; 4000-4999 are Cabildo's.
const (
	CloseNormal       = 1000
	CloseInvalidData  = 1007 // a text frame that is not valid UTF-8
	ClosePolicy       = 1008 // a binary frame, or a frame that breaks the protocol again and again
	CloseTooBig       = 1009 // a frame over the read limit
	CloseReconnect    = 4012 // the server is shutting down: reconnect, resume with since
	CloseUnauthorized = 4401 // the token is not valid, or expired while subscribed
	CloseForbidden    = 4403 // reserved: a forbidden subscription is an error frame
	CloseAuthTimeout  = 4408 // no auth and no public subscription in time
	CloseTooManySubs  = 4409 // kept subscribing over the limit
	CloseRateLimited  = 4429 // kept sending over the rate limit
	CloseSlowConsumer = 4503 // could not keep up: reconnect and resume with since
)

// Limits the server enforces by default; the server's configuration may change them.
const (
	MaxFrameBytes    = 64 << 10 // a client frame; see MaxServerFrameBytes for the other way
	MaxChannelName   = 255
	MaxSubscriptions = 128
	// OverSubscribes is how many subscribes over MaxSubscriptions are answered with
	// too_many_subscriptions before the connection is closed with CloseTooManySubs.
	OverSubscribes  = 10
	FramesPerSecond = 20
	FrameBurst      = 2 * FramesPerSecond
)

// MaxServerFrameBytes is the most any server frame weighs, whatever the event's size: a
// snapshot that would weigh more comes in parts. It is a promise, not a setting, so a
// client may set its read limit to it.
const MaxServerFrameBytes = 64 << 10

// Timing defaults, in seconds; the server's configuration may change them.
const (
	AuthTimeoutSeconds  = 5  // auth or a public subscription within this, else CloseAuthTimeout
	PingIntervalSeconds = 25 // the server pings this often
	IdleTimeoutSeconds  = 35 // nothing (no frame, no pong) for this long: the peer is dropped
)
