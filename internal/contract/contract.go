// Package contract checks HTTP exchanges against the REST contract, mobile-api/openapi.yaml,
// so that tests prove the server answers exactly what the contract documents: every status,
// header and body, down to "no extra properties". It is test support: HTTP tests load one
// Validator and pass it every request they make and every response they get.
package contract

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	mobileapi "github.com/cabildo/cabildo/mobile-api"
)

// Validator checks requests and responses against the contract. It is safe for concurrent use.
type Validator struct {
	doc     *openapi3.T
	router  routers.Router
	problem *openapi3.Schema
	// opts are shared by every check; kin-openapi only reads them.
	opts *openapi3filter.Options
}

// Load parses and validates the embedded contract and prepares a Validator.
func Load() (*Validator, error) {
	return load(mobileapi.OpenAPI)
}

func load(data []byte) (*Validator, error) {
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("contract: load openapi.yaml: %w", err)
	}
	// Format validation makes Validate refuse formats kin-openapi does not know, so a typo
	// such as "date_time" cannot silently disable a check.
	if err := doc.Validate(context.Background(), openapi3.EnableSchemaFormatValidation()); err != nil {
		return nil, fmt.Errorf("contract: openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	problem := doc.Components.Schemas["Problem"]
	if problem == nil || problem.Value == nil {
		return nil, errors.New("contract: openapi.yaml has no Problem schema")
	}
	// Routers match the host against servers; tests talk to http://127.0.0.1:<port>, which
	// no server entry names. Without servers, routing looks at the path alone.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("contract: build router: %w", err)
	}
	opts := &openapi3filter.Options{
		// Whether a token is good is for the server's own tests to prove; the contract only
		// declares which operations need one.
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		MultiError:            true,
		SkipSettingDefaults:   true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidators(formats),
		},
	}
	opts.WithCustomSchemaErrorFunc(schemaErrorMessage)
	// A YAML document is text: the contract declares GET /openapi.yaml as a string, and
	// kin-openapi's own YAML decoder would turn it into an object and hide a mismatch.
	openapi3filter.RegisterBodyDecoder("application/yaml", yamlText)
	return &Validator{doc: doc, router: router, problem: problem.Value, opts: opts}, nil
}

// yamlText reads a YAML body as the string it is, after checking that it is YAML.
func yamlText(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	if _, err := openapi3.NewLoader().LoadFromData(b); err != nil {
		return nil, &openapi3filter.ParseError{Kind: openapi3filter.KindInvalidFormat, Cause: err}
	}
	return string(b), nil
}

// transport are statuses the HTTP layer answers for any route before routing: a request
// that did not arrive in time, or headers over the buffer. openapi.yaml documents them once,
// under these components.responses.
var transport = map[int]string{
	http.StatusRequestTimeout:              "RequestTimeout",
	http.StatusRequestHeaderFieldsTooLarge: "HeadersTooLarge",
}

// formats adds what kin-openapi leaves unchecked: it validates date and date-time out of the
// box, but accepts anything as uuid, uri or uri-reference.
var formats = map[string]openapi3.StringFormatValidator{
	"uuid": openapi3.NewRegexpFormatValidator(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`),
	"uri": openapi3.NewCallbackValidator(func(s string) error {
		u, err := url.Parse(s)
		if err != nil || !u.IsAbs() {
			return errors.New("not an absolute URI")
		}
		return nil
	}),
	"uri-reference": openapi3.NewCallbackValidator(func(s string) error {
		if _, err := url.Parse(s); err != nil {
			return errors.New("not a URI reference")
		}
		return nil
	}),
	// kin-openapi registers these globally; restating them here keeps them checked even if
	// other code in the test binary redefines the global ones.
	"date":      openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringDate),
	"date-time": openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringDateTime),
}

// schemaErrorMessage keeps failures to one line naming where in the body they are; kin-openapi
// otherwise prints the whole schema and value, which buries the point in a large response.
func schemaErrorMessage(err *openapi3.SchemaError) string {
	where := "/" + strings.Join(err.JSONPointer(), "/")
	reason := err.Reason
	if err.Origin != nil {
		reason = err.Origin.Error()
	}
	if reason == "" {
		reason = fmt.Sprintf("does not match %q", err.SchemaField)
	}
	var nested *openapi3.SchemaError
	if errors.As(err.Origin, &nested) {
		return fmt.Sprintf("at %s: %s", where, reason) // the nested error shows the value
	}
	if v := shortValue(err.Value); v != "" {
		return fmt.Sprintf("at %s: %s (value %s)", where, reason, v)
	}
	return fmt.Sprintf("at %s: %s", where, reason)
}

func shortValue(v any) string {
	switch v.(type) {
	case map[string]any, []any:
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

// Check validates a response to req: its status must be one the operation documents
// explicitly (a 5xx may fall back to the documented default), and its headers and body must
// match that response. Requests to paths or methods the contract does not have may only be
// answered 404 or 405 with a Problem. req.URL may carry any host; only its path and query
// are used, and req's body is not read.
func (v *Validator) Check(req *http.Request, status int, header http.Header, body []byte) error {
	if header == nil {
		header = http.Header{}
	}
	name := fmt.Sprintf("%s %s → %d", req.Method, req.URL.RequestURI(), status)
	// A compressed body is checked as what it decodes to; Content-Encoding itself is
	// checked against the contract with the other headers.
	body, err := decodeBody(header.Get("Content-Encoding"), body)
	if err != nil {
		return fmt.Errorf("contract: %s: %w", name, err)
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		if err := v.checkUnrouted(req, status, header, body); err != nil {
			return fmt.Errorf("contract: %s: %w", name, err)
		}
		return nil
	}
	name = fmt.Sprintf("%s (%s %s)", name, route.Method, route.Path)
	if err := v.checkResponse(req, route, params, status, header, body); err != nil {
		return fmt.Errorf("contract: %s: %w", name, err)
	}
	return nil
}

// decodeBody undoes a response's content coding: gzip or br (brotli), the codings the
// server offers; any other is an error, since the body could not be checked.
func decodeBody(coding string, body []byte) ([]byte, error) {
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(coding)) {
	case "", "identity":
		return body, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("the body is not gzip, as Content-Encoding says: %w", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	default:
		return nil, fmt.Errorf("Content-Encoding %q is not a coding this API uses", coding)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("the body does not decode as its Content-Encoding %q: %w", coding, err)
	}
	return plain, nil
}

func (v *Validator) checkUnrouted(req *http.Request, status int, header http.Header, body []byte) error {
	want := http.StatusNotFound
	if v.pathExists(req) {
		want = http.StatusMethodNotAllowed
	}
	if status != want {
		return fmt.Errorf("the contract has no such operation, so the answer must be a %d Problem", want)
	}
	return v.checkProblem(status, header, body)
}

// pathExists reports whether some other method has an operation at req's path. The legacy
// router says "method not allowed" only for paths without parameters, so ask it per method.
func (v *Validator) pathExists(req *http.Request) bool {
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		r := req.Clone(req.Context())
		r.Method = m
		if _, _, err := v.router.FindRoute(r); err == nil {
			return true
		}
	}
	return false
}

func (v *Validator) checkResponse(req *http.Request, route *routers.Route, params map[string]string, status int, header http.Header, body []byte) error {
	responses := route.Operation.Responses
	resp := responses.Status(status)
	if resp == nil && status >= 500 {
		resp = responses.Default()
	}
	if name, ok := transport[status]; resp == nil && ok {
		resp = v.doc.Components.Responses[name]
	}
	if resp == nil || resp.Value == nil {
		return fmt.Errorf("status %d is not documented for this operation", status)
	}
	if len(resp.Value.Content) == 0 {
		if len(body) != 0 {
			return fmt.Errorf("status %d is documented without a body, got %d bytes", status, len(body))
		}
		if status == http.StatusNotModified {
			// kin-openapi skips 304 entirely; its headers still matter to caches.
			return v.checkHeaders(resp.Value, header)
		}
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: params,
			Route:      route,
			Options:    v.opts,
		},
		Status:  status,
		Header:  header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: v.opts,
	}
	if err := openapi3filter.ValidateResponse(req.Context(), input); err != nil {
		return err
	}
	if isProblem(header) {
		return v.checkProblemStatus(status, body)
	}
	return nil
}

// checkHeaders validates documented headers by hand, for the responses kin-openapi skips.
func (v *Validator) checkHeaders(resp *openapi3.Response, header http.Header) error {
	for name, ref := range resp.Headers {
		h := ref.Value
		got := header.Get(name)
		if got == "" {
			if h.Required {
				return fmt.Errorf("response header %q missing", name)
			}
			continue
		}
		if h.Schema == nil || h.Schema.Value == nil || !h.Schema.Value.Type.Is(openapi3.TypeString) {
			continue
		}
		opts := append([]openapi3.SchemaValidationOption{openapi3.VisitAsResponse()}, v.opts.SchemaValidationOptions...)
		if err := h.Schema.Value.VisitJSON(got, opts...); err != nil {
			return fmt.Errorf("response header %q doesn't match schema: %w", name, err)
		}
	}
	return nil
}

// checkProblem validates a problem+json answer outside any operation.
func (v *Validator) checkProblem(status int, header http.Header, body []byte) error {
	if !isProblem(header) {
		return fmt.Errorf("Content-Type is %q, want application/problem+json", header.Get("Content-Type"))
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return fmt.Errorf("problem body is not JSON: %w", err)
	}
	opts := append([]openapi3.SchemaValidationOption{openapi3.VisitAsResponse(), openapi3.MultiErrors(),
		openapi3.SetSchemaErrorMessageCustomizer(schemaErrorMessage)}, v.opts.SchemaValidationOptions...)
	if err := v.problem.VisitJSON(value, opts...); err != nil {
		return fmt.Errorf("problem body doesn't match schema: %w", err)
	}
	return v.checkProblemStatus(status, body)
}

// checkProblemStatus checks what a schema cannot: a problem's status is the response's.
func (v *Validator) checkProblemStatus(status int, body []byte) error {
	var p struct {
		Status int `json:"status"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("problem body is not JSON: %w", err)
	}
	if p.Status != status {
		return fmt.Errorf("problem status %d differs from the response status %d", p.Status, status)
	}
	return nil
}

func isProblem(header http.Header) bool {
	mt, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	return err == nil && mt == "application/problem+json"
}

// CheckRequest validates a request as a client would send it: path and query parameters,
// headers and body (read from body, not from req). Credentials are not checked. Tests use it
// to prove that the bodies they send are ones the contract allows, so that the server's
// answers to them mean something.
func (v *Validator) CheckRequest(req *http.Request, body []byte) error {
	name := fmt.Sprintf("%s %s", req.Method, req.URL.RequestURI())
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("contract: %s: the contract has no such operation: %w", name, err)
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	input := &openapi3filter.RequestValidationInput{
		Request:    r,
		PathParams: params,
		Route:      route,
		Options:    v.opts,
	}
	if err := openapi3filter.ValidateRequest(req.Context(), input); err != nil {
		return fmt.Errorf("contract: %s (%s %s): %w", name, route.Method, route.Path, err)
	}
	return nil
}

// Document returns the parsed contract (without its servers), for tests that walk it, such as
// one proving every domain error code is documented. Callers must not modify it.
func (v *Validator) Document() *openapi3.T { return v.doc }
