package cabildo

import (
	"errors"
	"fmt"
	"time"
)

// Code is a stable, machine-readable error code. Clients switch on it; it never changes
// meaning once published (docs/errors.md lists them all).
type Code string

const (
	CodeInvalidRequest       Code = "invalid_request"        // malformed JSON, wrong types, bad query
	CodeUnknownField         Code = "unknown_field"          // a field the contract does not define
	CodeValidation           Code = "validation_failed"      // well-formed but breaks a rule; see Fields
	CodeNotFound             Code = "not_found"              // no such event, session, room, ...
	CodeAlreadyExists        Code = "already_exists"         // create of something that exists
	CodeVersionConflict      Code = "version_conflict"       // optimistic concurrency lost
	CodeIdempotencyKeyReused Code = "idempotency_key_reused" // same key, different request
	CodeInvalidTransition    Code = "invalid_transition"     // the question's state does not allow this action
	CodeQAClosed             Code = "qa_closed"              // the session takes no questions now
	CodeUnauthorized         Code = "unauthorized"           // no or invalid credentials
	CodeForbidden            Code = "forbidden"              // valid credentials, not allowed
	CodePayloadTooLarge      Code = "payload_too_large"
	CodeHeadersTooLarge      Code = "headers_too_large" // a header line, or all of them, over the server's buffer
	CodeRequestTimeout       Code = "request_timeout"   // the request was not sent whole in time
	CodeUnsupportedMedia     Code = "unsupported_media_type"
	CodeMethodNotAllowed     Code = "method_not_allowed"
	CodeVersionTooOld        Code = "version_too_old" // changes before this version are gone: reload
	CodeVersionUnknown       Code = "version_unknown" // a version this server has never seen: reload
	CodeRateLimited          Code = "rate_limited"
	CodeUnavailable          Code = "unavailable" // the log of record cannot take writes now; retry
	CodeTimeout              Code = "timeout"
	CodeInternal             Code = "internal"
)

// FieldError names one offending field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error is the one error type that crosses package boundaries towards clients. Message is
// safe to show to a client; the wrapped cause is for logs only.
type Error struct {
	Code       Code
	Message    string
	Fields     []FieldError
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a client-safe message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or CodeInternal.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Fields collects field errors; its Err method returns nil when nothing was added.
type Fields []FieldError

func (f *Fields) Add(field, code, format string, args ...any) {
	*f = append(*f, FieldError{Field: field, Code: code, Message: fmt.Sprintf(format, args...)})
}

// Err returns a validation *Error carrying the collected fields, or nil.
func (f Fields) Err() error {
	if len(f) == 0 {
		return nil
	}
	msg := f[0].Message
	if len(f) > 1 {
		msg = fmt.Sprintf("%s (and %d more)", msg, len(f)-1)
	}
	return &Error{Code: CodeValidation, Message: msg, Fields: f}
}
