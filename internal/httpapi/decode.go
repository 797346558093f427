package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// decodeBody decodes a JSON request body strictly: the right content type, one JSON object,
// member names exactly as the contract spells them (a case variant such as "Title" or "EN"
// is an unknown field, never a near match), no unknown fields (a mass-assignment attempt
// such as "status" or "id" is refused, not ignored), no member twice, valid UTF-8 only
// (an invalid byte or a lone surrogate escape is refused, not replaced with U+FFFD), and
// type errors named by field. A 2xx then always means the server understood every byte.
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
	return decodeStrict(c.Body(), v)
}

// strict is how every JSON the server accepts is read, bodies and websocket frames alike.
// encoding/json matches member names case-insensitively and replaces invalid UTF-8, so
// {"title":{"EN":"…"}} would be accepted as if it meant something; the v2 decoder is exact.
var strict = json.JoinOptions(json.RejectUnknownMembers(true))

// decodeStrict decodes one JSON object into v under the strict rules of decodeBody.
func decodeStrict(b []byte, v any) error {
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body is empty; send a JSON object")
	case trimmed[0] != '{':
		// null, arrays and scalars would otherwise decode into nothing and look accepted.
		if err := json.Unmarshal(b, new(jsontext.Value)); err != nil {
			return jsonError(err)
		}
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body must be a JSON object, not %s", kindName(jsontext.Value(trimmed).Kind()))
	}
	if err := json.Unmarshal(b, v, strict); err != nil {
		return jsonError(err)
	}
	return nil
}

func jsonError(err error) error {
	var (
		syntax   *jsontext.SyntacticError
		semantic *json.SemanticError
	)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body is not valid JSON (it ends too early)")
	case errors.As(err, &syntax):
		field := pointerField(syntax.JSONPointer)
		switch {
		case errors.Is(syntax.Err, jsontext.ErrDuplicateName):
			return fieldError(cabildo.CodeInvalidRequest, field, "duplicate_field", "%s is sent twice", field)
		case strings.Contains(syntax.Err.Error(), "invalid UTF-8"):
			return fieldError(cabildo.CodeInvalidRequest, field, "invalid_utf8", "%s is not valid UTF-8 (an invalid byte or a lone surrogate)", field)
		}
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body is not valid JSON (at byte %d)", syntax.ByteOffset)
	case errors.As(err, &semantic):
		field := pointerField(semantic.JSONPointer)
		if errors.Is(semantic.Err, json.ErrUnknownName) {
			return fieldError(cabildo.CodeUnknownField, field, "unknown_field", "field %q is not accepted here (names are exact and lower-case)", field)
		}
		want := "the documented type"
		if semantic.GoType != nil {
			want = jsonKind(semantic.GoType.Kind().String())
		}
		got := kindName(semantic.JSONKind)
		if field == "" {
			field = "(body)"
		}
		return fieldError(cabildo.CodeInvalidRequest, field, "wrong_type", "%s must be %s, not %s", field, want, got)
	}
	return cabildo.Errorf(cabildo.CodeInvalidRequest, "the body could not be read as the expected JSON object")
}

func fieldError(code cabildo.Code, field, fieldCode, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &cabildo.Error{Code: code, Message: msg, Fields: []cabildo.FieldError{{Field: field, Code: fieldCode, Message: msg}}}
}

// pointerField names the member a JSON Pointer points at the way validation errors name
// fields: reason.text.en, speakers[2].
func pointerField(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if _, err := strconv.Atoi(tok); err == nil && b.Len() > 0 {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "something else"
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
