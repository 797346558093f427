package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// decodeBody decodes a JSON request body strictly: the right content type, one JSON value,
// no unknown fields (a mass-assignment attempt such as "status" or "id" is refused, not
// ignored), and type errors named by field.
func decodeBody(c *fiber.Ctx, v any, mediaTypes ...string) error {
	ct := c.Get(fiber.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = ""
	}
	ok := mt == fiber.MIMEApplicationJSON
	for _, m := range mediaTypes {
		ok = ok || mt == m
	}
	if !ok {
		return cabildo.Errorf(cabildo.CodeUnsupportedMedia, "send the body as application/json, not %q", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body must hold exactly one JSON value")
	}
	return nil
}

func jsonError(err error) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body is empty; send a JSON object")
	case errors.As(err, &syntax):
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body is not valid JSON (at byte %d)", syntax.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body is not valid JSON (it ends too early)")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(body)"
		}
		return &cabildo.Error{Code: cabildo.CodeInvalidRequest, Message: fmt.Sprintf("%s must be %s", field, jsonKind(typ.Type.Kind().String())),
			Fields: []cabildo.FieldError{{Field: field, Code: "wrong_type", Message: fmt.Sprintf("must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value)}}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &cabildo.Error{Code: cabildo.CodeUnknownField, Message: fmt.Sprintf("field %q is not accepted here", name),
			Fields: []cabildo.FieldError{{Field: name, Code: "unknown_field", Message: "not accepted here"}}}
	}
	return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body could not be read as the expected JSON object")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	case "int", "int64", "int32", "uint64", "float64":
		return "a number"
	}
	return "a " + goKind
}

// parseTime reads an RFC 3339 instant for a field.
func parseTime(f *cabildo.Fields, field, s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		f.Add(field, "invalid_time", "%s must be an RFC 3339 date-time with offset, such as 2027-04-14T09:00:00-06:00", field)
	}
	return t
}
