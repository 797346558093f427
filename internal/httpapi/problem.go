package httpapi

import (
	"errors"
	"log/slog"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// problemBase prefixes every problem type URI; docs/errors.md documents each code there.
const problemBase = "https://github.com/cabildo/cabildo/blob/main/docs/errors.md#"

// problem is an RFC 9457 problem detail with Cabildo's stable code.
type problem struct {
	Type     string               `json:"type"`
	Title    string               `json:"title"`
	Status   int                  `json:"status"`
	Code     cabildo.Code         `json:"code"`
	Detail   string               `json:"detail,omitempty"`
	Instance string               `json:"instance,omitempty"`
	Errors   []cabildo.FieldError `json:"errors,omitempty"`
}

var codeStatus = map[cabildo.Code]int{
	cabildo.CodeInvalidRequest:       fiber.StatusBadRequest,
	cabildo.CodeUnknownField:         fiber.StatusBadRequest,
	cabildo.CodeValidation:           fiber.StatusBadRequest,
	cabildo.CodeNotFound:             fiber.StatusNotFound,
	cabildo.CodeAlreadyExists:        fiber.StatusConflict,
	cabildo.CodeVersionConflict:      fiber.StatusConflict,
	cabildo.CodeIdempotencyKeyReused: fiber.StatusUnprocessableEntity,
	cabildo.CodeInvalidTransition:    fiber.StatusConflict,
	cabildo.CodeQAClosed:             fiber.StatusConflict,
	cabildo.CodeUnauthorized:         fiber.StatusUnauthorized,
	cabildo.CodeForbidden:            fiber.StatusForbidden,
	cabildo.CodePayloadTooLarge:      fiber.StatusRequestEntityTooLarge,
	cabildo.CodeHeadersTooLarge:      fiber.StatusRequestHeaderFieldsTooLarge,
	cabildo.CodeRequestTimeout:       fiber.StatusRequestTimeout,
	cabildo.CodeUnsupportedMedia:     fiber.StatusUnsupportedMediaType,
	cabildo.CodeMethodNotAllowed:     fiber.StatusMethodNotAllowed,
	cabildo.CodeVersionTooOld:        fiber.StatusGone,
	cabildo.CodeVersionUnknown:       fiber.StatusGone,
	cabildo.CodeRateLimited:          fiber.StatusTooManyRequests,
	cabildo.CodeUnavailable:          fiber.StatusServiceUnavailable,
	cabildo.CodeTimeout:              fiber.StatusServiceUnavailable,
	cabildo.CodeInternal:             fiber.StatusInternalServerError,
}

var codeTitle = map[cabildo.Code]string{
	cabildo.CodeInvalidRequest:       "The request is malformed",
	cabildo.CodeUnknownField:         "The request has a field this API does not accept",
	cabildo.CodeValidation:           "The request breaks a rule of the programme",
	cabildo.CodeNotFound:             "Not found",
	cabildo.CodeAlreadyExists:        "It already exists",
	cabildo.CodeVersionConflict:      "Someone else changed it first",
	cabildo.CodeIdempotencyKeyReused: "The Idempotency-Key was used for another request",
	cabildo.CodeInvalidTransition:    "The question's state does not allow this",
	cabildo.CodeQAClosed:             "This session is not taking questions",
	cabildo.CodeUnauthorized:         "Authentication required",
	cabildo.CodeForbidden:            "Not allowed",
	cabildo.CodePayloadTooLarge:      "The request body is too large",
	cabildo.CodeHeadersTooLarge:      "The request headers are too large",
	cabildo.CodeRequestTimeout:       "The request took too long to arrive",
	cabildo.CodeUnsupportedMedia:     "Unsupported content type",
	cabildo.CodeMethodNotAllowed:     "Method not allowed",
	cabildo.CodeVersionTooOld:        "That version is too old: reload",
	cabildo.CodeVersionUnknown:       "That version is unknown: reload",
	cabildo.CodeRateLimited:          "Too many requests",
	cabildo.CodeUnavailable:          "Temporarily unavailable",
	cabildo.CodeTimeout:              "Temporarily unavailable",
	cabildo.CodeInternal:             "Internal error",
}

// ifMatchKey marks a request that sent If-Match: a version conflict is then a failed
// precondition (412) rather than a plain conflict (409).
const ifMatchKey = "cabildo.if-match"

// errorHandler is the one place errors become HTTP responses. Clients see a stable code
// and a message written for them; internal errors are logged, never shown.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	var (
		ce *cabildo.Error
		fe *fiber.Error
	)
	switch {
	case errors.As(err, &ce):
	case errors.As(err, &fe):
		ce = fiberError(fe)
	default:
		ce = &cabildo.Error{Code: cabildo.CodeInternal, Message: "something went wrong on our side", Err: err}
	}
	status, ok := codeStatus[ce.Code]
	if !ok {
		status = fiber.StatusInternalServerError
	}
	if ce.Code == cabildo.CodeVersionConflict && c.Locals(ifMatchKey) != nil {
		status = fiber.StatusPreconditionFailed
	}
	if status >= 500 {
		s.log.Error("request failed", "method", c.Method(), "path", c.Path(), "code", ce.Code, "err", err)
	} else {
		s.log.Debug("request refused", "method", c.Method(), "path", c.Path(), "code", ce.Code, slog.Any("err", err))
	}
	msg := ce.Message
	if ce.Code == cabildo.CodeInternal {
		msg = "something went wrong on our side"
	}
	if ce.RetryAfter > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int((ce.RetryAfter+999_999_999)/1_000_000_000)))
	}
	if status == fiber.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="cabildo"`)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return writeJSON(c, status, "application/problem+json", problem{
		Type: problemBase + string(ce.Code), Title: codeTitle[ce.Code], Status: status, Code: ce.Code,
		Detail: msg, Instance: c.Path(), Errors: ce.Fields,
	})
}

func fiberError(fe *fiber.Error) *cabildo.Error {
	switch fe.Code {
	case fiber.StatusNotFound:
		return cabildo.Errorf(cabildo.CodeNotFound, "no such resource")
	case fiber.StatusMethodNotAllowed:
		return cabildo.Errorf(cabildo.CodeMethodNotAllowed, "this resource does not support that method")
	case fiber.StatusRequestEntityTooLarge:
		return cabildo.Errorf(cabildo.CodePayloadTooLarge, "the request body is larger than this API accepts")
	case fiber.StatusUnsupportedMediaType:
		return cabildo.Errorf(cabildo.CodeUnsupportedMedia, "send application/json")
	case fiber.StatusRequestHeaderFieldsTooLarge:
		return cabildo.Errorf(cabildo.CodeHeadersTooLarge, "the request's headers are larger than the 4 KiB this server reads")
	case fiber.StatusRequestTimeout:
		return cabildo.Errorf(cabildo.CodeRequestTimeout, "the request did not arrive whole within the time this server waits")
	case fiber.StatusBadRequest:
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the request is malformed")
	}
	if fe.Code >= 500 {
		return &cabildo.Error{Code: cabildo.CodeInternal, Message: "something went wrong on our side", Err: fe}
	}
	return cabildo.Errorf(cabildo.CodeInvalidRequest, "the request is malformed")
}
