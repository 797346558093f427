package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/oasdiff/yaml"
	"github.com/santhosh-tekuri/jsonschema/v6"

	mobileapi "github.com/cabildo/cabildo/mobile-api"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// FrameValidator checks websocket frames against the realtime contract,
// mobile-api/asyncapi.yaml: each frame must be exactly one of the messages the document
// lists for its direction, picked by the frame's type and, for the types that have one
// message per channel kind (snapshot, update), by the channel's prefix; a snapshot in
// parts (a frame with parts) is the one message marked x-snapshot-part. Every frame must
// also be within its direction's size bound (x-limits). Websocket tests load one
// FrameValidator and pass it every frame they send and receive, and the snapshots they
// join from parts to Snapshot. It is safe for concurrent use.
type FrameValidator struct {
	doc    map[string]any
	client map[string][]frameSchema // by frame type
	server map[string][]frameSchema
	// The most a frame may weigh, each way: maxFrameBytes and maxServerFrameBytes.
	clientMax, serverMax int
}

// frameSchema is one message of the document, compiled.
type frameSchema struct {
	message string // its key in components/messages
	prefix  string // x-channel-prefix: the channels it is for; "" for any
	part    bool   // x-snapshot-part: the frames of a snapshot in parts, on any channel
	schema  *jsonschema.Schema
}

// asyncAPIURL names the document inside the schema compiler; nothing is fetched from it.
const asyncAPIURL = "https://cabildo.invalid/mobile-api/asyncapi.yaml"

// LoadFrames parses the embedded realtime contract and compiles every message's payload.
func LoadFrames() (*FrameValidator, error) {
	return loadFrames(mobileapi.AsyncAPI)
}

func loadFrames(data []byte) (*FrameValidator, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("contract: asyncapi.yaml is not YAML: %w", err)
	}
	// json.Number keeps 64-bit integers (ids, versions, limits) exact.
	parsed, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, fmt.Errorf("contract: asyncapi.yaml: %w", err)
	}
	doc, ok := parsed.(map[string]any)
	if !ok || doc["asyncapi"] != "3.0.0" {
		return nil, errors.New("contract: asyncapi.yaml is not an AsyncAPI 3.0.0 document")
	}
	if err := checkFormats(doc, ""); err != nil {
		return nil, fmt.Errorf("contract: asyncapi.yaml: %w", err)
	}
	c := jsonschema.NewCompiler()
	// AsyncAPI's default schema format is a superset of JSON Schema draft-07; keywords it
	// adds (examples aside, none are used here) are ignored by the compiler.
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if err := c.AddResource(asyncAPIURL, parsed); err != nil {
		return nil, fmt.Errorf("contract: asyncapi.yaml: %w", err)
	}
	v := &FrameValidator{doc: doc, client: map[string][]frameSchema{}, server: map[string][]frameSchema{}}
	if v.clientMax, v.serverMax, err = frameLimits(doc); err != nil {
		return nil, fmt.Errorf("contract: asyncapi.yaml: %w", err)
	}
	ops, _ := doc["operations"].(map[string]any)
	for _, name := range sortedKeys(ops) {
		op, _ := ops[name].(map[string]any)
		var into map[string][]frameSchema
		switch op["action"] {
		case "receive": // the document describes the server: it receives client frames
			into = v.client
		case "send":
			into = v.server
		default:
			return nil, fmt.Errorf("contract: asyncapi.yaml: operation %s has no valid action", name)
		}
		msgs, _ := op["messages"].([]any)
		for _, m := range msgs {
			ref, _ := m.(map[string]any)["$ref"].(string)
			fs, typ, err := compileMessage(c, doc, ref)
			if err != nil {
				return nil, fmt.Errorf("contract: asyncapi.yaml: operation %s: %w", name, err)
			}
			into[typ] = append(into[typ], fs)
		}
	}
	if len(v.client) == 0 || len(v.server) == 0 {
		return nil, errors.New("contract: asyncapi.yaml has no receive or no send operation")
	}
	for _, side := range []map[string][]frameSchema{v.client, v.server} {
		for typ, list := range side {
			if err := checkAlternatives(typ, list); err != nil {
				return nil, fmt.Errorf("contract: asyncapi.yaml: %w", err)
			}
		}
	}
	return v, nil
}

// frameLimits reads the frame size bounds of channel ws.
func frameLimits(doc map[string]any) (client, server int, err error) {
	channels, _ := doc["channels"].(map[string]any)
	ws, _ := channels["ws"].(map[string]any)
	limits, _ := ws["x-limits"].(map[string]any)
	read := func(key string) (int, error) {
		n, ok := limits[key].(json.Number)
		if !ok {
			return 0, fmt.Errorf("channels.ws.x-limits.%s is missing", key)
		}
		i, err := n.Int64()
		if err != nil || i <= 0 {
			return 0, fmt.Errorf("channels.ws.x-limits.%s is %s, not a positive integer", key, n)
		}
		return int(i), nil
	}
	if client, err = read("maxFrameBytes"); err != nil {
		return 0, 0, err
	}
	server, err = read("maxServerFrameBytes")
	return client, server, err
}

// compileMessage follows ref to a message and compiles its payload. It returns the
// payload's type constant too.
func compileMessage(c *jsonschema.Compiler, doc map[string]any, ref string) (frameSchema, string, error) {
	ptr, msg, err := resolve(doc, ref)
	if err != nil {
		return frameSchema{}, "", err
	}
	payload, ok := msg["payload"].(map[string]any)
	if !ok {
		return frameSchema{}, "", fmt.Errorf("message %s has no payload", ptr)
	}
	if r, ok := payload["$ref"].(string); ok {
		if _, payload, err = resolve(doc, r); err != nil {
			return frameSchema{}, "", err
		}
	}
	props, _ := payload["properties"].(map[string]any)
	typeSchema, _ := props["type"].(map[string]any)
	typ, ok := typeSchema["const"].(string)
	if !ok {
		return frameSchema{}, "", fmt.Errorf("message %s: its payload has no type constant", ptr)
	}
	sch, err := c.Compile(asyncAPIURL + "#" + ptr + "/payload")
	if err != nil {
		return frameSchema{}, "", fmt.Errorf("message %s: %w", ptr, err)
	}
	prefix, _ := msg["x-channel-prefix"].(string)
	part, _ := msg["x-snapshot-part"].(bool)
	return frameSchema{message: ptr[strings.LastIndex(ptr, "/")+1:], prefix: prefix, part: part, schema: sch}, typ, nil
}

// checkAlternatives makes sure the messages sharing a frame type can be told apart: by
// the channel's prefix, but for one message for snapshot parts.
func checkAlternatives(typ string, list []frameSchema) error {
	parts := 0
	for _, fs := range list {
		if fs.part {
			if typ != protocol.TypeSnapshot || fs.prefix != "" {
				return fmt.Errorf("message %s: x-snapshot-part is for a %s message for every channel", fs.message, protocol.TypeSnapshot)
			}
			parts++
		}
	}
	if parts > 1 {
		return fmt.Errorf("type %q has %d messages for snapshot parts, want one", typ, parts)
	}
	list = slices.DeleteFunc(slices.Clone(list), func(fs frameSchema) bool { return fs.part })
	if len(list) <= 1 {
		return nil
	}
	var prefixes []string
	for _, fs := range list {
		if fs.prefix == "" {
			return fmt.Errorf("type %q has %d messages, so each needs an x-channel-prefix (%s has none)", typ, len(list), fs.message)
		}
		for _, p := range prefixes {
			if strings.HasPrefix(fs.prefix, p) || strings.HasPrefix(p, fs.prefix) {
				return fmt.Errorf("type %q: channel prefixes %q and %q overlap", typ, p, fs.prefix)
			}
		}
		prefixes = append(prefixes, fs.prefix)
	}
	return nil
}

// resolve follows a local reference ("#/components/messages/auth") through any further
// $ref, returning the JSON pointer of the object it ends at.
func resolve(doc map[string]any, ref string) (string, map[string]any, error) {
	for range 10 {
		ptr, ok := strings.CutPrefix(ref, "#")
		if !ok {
			return "", nil, fmt.Errorf("reference %q is not local to the document", ref)
		}
		var cur any = doc
		for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			m, ok := cur.(map[string]any)
			if !ok {
				return "", nil, fmt.Errorf("reference %q: no such object", ref)
			}
			if cur, ok = m[tok]; !ok {
				return "", nil, fmt.Errorf("reference %q: no such object", ref)
			}
		}
		obj, ok := cur.(map[string]any)
		if !ok {
			return "", nil, fmt.Errorf("reference %q is not an object", ref)
		}
		next, ok := obj["$ref"].(string)
		if !ok {
			return ptr, obj, nil
		}
		ref = next
	}
	return "", nil, fmt.Errorf("reference %q: too many hops", ref)
}

// knownFormats are the formats the validator checks, plus OpenAPI's integer sizes, which
// describe rather than constrain. Any other format would be silently ignored, so a typo such
// as "date_time" must fail loading instead.
var knownFormats = []string{
	"date", "date-time", "uuid", "uri", "uri-reference", "email", "hostname", "time",
	"int32", "int64",
}

func checkFormats(v any, at string) error {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(v) {
			if f, ok := v[k].(string); ok && k == "format" && !slices.Contains(knownFormats, f) {
				return fmt.Errorf("%s: unknown format %q", at, f)
			}
			if err := checkFormats(v[k], at+"/"+k); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := checkFormats(e, fmt.Sprintf("%s/%d", at, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Server checks a frame the server sent (one websocket text message), its size included.
func (v *FrameValidator) Server(frame []byte) error {
	return v.check("server", v.server, v.client, frame, v.serverMax)
}

// Client checks a frame a client sent, to prove a test's frames are ones the contract
// allows, so that the server's answers to them mean something.
func (v *FrameValidator) Client(frame []byte) error {
	return v.check("client", v.client, v.server, frame, v.clientMax)
}

// Snapshot checks a snapshot a client joined from parts (protocol.Parts): the frame it
// stands for must be a valid snapshot of its channel but for its size, which no frame
// ever had.
func (v *FrameValidator) Snapshot(f protocol.ServerFrame) error {
	if f.Type != protocol.TypeSnapshot || f.Parts != 0 || f.Data == nil {
		return fmt.Errorf("contract: a joined snapshot is a %s frame with data and no parts, not %s with parts %d", protocol.TypeSnapshot, f.Type, f.Parts)
	}
	frame, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("contract: joined snapshot of %s: %w", f.Channel, err)
	}
	return v.check("server", v.server, v.client, frame, 0)
}

// check validates frame as one of own's messages; limit > 0 bounds its size.
func (v *FrameValidator) check(side string, own, other map[string][]frameSchema, frame []byte, limit int) error {
	if limit > 0 && len(frame) > limit {
		return fmt.Errorf("contract: %s frame of %d bytes is over the %d the contract allows: %s", side, len(frame), limit, short(frame))
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(frame))
	if err != nil {
		return fmt.Errorf("contract: %s frame is not one JSON value: %w", side, err)
	}
	obj, ok := inst.(map[string]any)
	if !ok {
		return fmt.Errorf("contract: %s frame is not a JSON object: %s", side, short(frame))
	}
	typ, ok := obj["type"].(string)
	if !ok {
		return fmt.Errorf("contract: %s frame has no string type: %s", side, short(frame))
	}
	list := own[typ]
	if len(list) == 0 {
		if len(other[typ]) > 0 {
			return fmt.Errorf("contract: %q frames do not go that way: not a %s frame", typ, side)
		}
		return fmt.Errorf("contract: %s frame type %q is not in the contract (it has %s)", side, typ, strings.Join(sortedKeys(own), ", "))
	}
	_, inParts := obj["parts"]
	if _, ok := obj["part"]; ok {
		inParts = true
	}
	if _, ok := obj["chunk"]; ok {
		inParts = true
	}
	// A frame with parts is checked against the message for parts, whatever its channel;
	// one without, against the others.
	list = slices.DeleteFunc(slices.Clone(list), func(fs frameSchema) bool { return fs.part != inParts })
	if len(list) == 0 {
		return fmt.Errorf("contract: %s %s frame with part, parts or chunk: the contract has no such message", side, typ)
	}
	fs := list[0]
	if len(list) > 1 {
		channel, _ := obj["channel"].(string)
		var prefixes []string
		found := false
		for _, f := range list {
			prefixes = append(prefixes, f.prefix+"…")
			if strings.HasPrefix(channel, f.prefix) {
				fs, found = f, true
			}
		}
		if !found {
			return fmt.Errorf("contract: %s %s frame on channel %q: the contract has them for %s only", side, typ, channel, strings.Join(prefixes, ", "))
		}
	}
	if err := fs.schema.Validate(inst); err != nil {
		return fmt.Errorf("contract: %s %s frame does not match message %s: %s", side, typ, fs.message, validationMessage(err))
	}
	if err := checkVersions(fs.message, obj); err != nil {
		return fmt.Errorf("contract: %s %s frame (message %s): %w", side, typ, fs.message, err)
	}
	return nil
}

// checkVersions checks what the document says about versions and a schema cannot: an
// update's prev is below its version, and the versions inside data are the frame's.
func checkVersions(message string, frame map[string]any) error {
	version, _ := frame["version"].(json.Number)
	if prev, ok := frame["prev"].(json.Number); ok && !numLess(prev, version) {
		return fmt.Errorf("prev %s is not below version %s", prev, version)
	}
	if part, ok := frame["part"].(json.Number); ok {
		if parts, _ := frame["parts"].(json.Number); numLess(parts, part) {
			return fmt.Errorf("part %s of %s", part, parts)
		}
	}
	data, _ := frame["data"].(map[string]any)
	var inner []any
	switch message {
	case "scheduleSnapshot":
		inner = []any{data["version"]}
	case "scheduleUpdate":
		changes, _ := data["changes"].([]any)
		for _, c := range changes {
			inner = append(inner, c.(map[string]any)["version"])
		}
	case "announcementsUpdate":
		inner = []any{data["announcement"].(map[string]any)["version"]}
	}
	for _, v := range inner {
		if n, _ := v.(json.Number); n.String() != version.String() {
			return fmt.Errorf("data carries version %v, the frame %s", v, version)
		}
	}
	return nil
}

// numLess compares two non-negative JSON integers exactly, as strings of digits.
func numLess(a, b json.Number) bool {
	x, y := strings.TrimLeft(a.String(), "0"), strings.TrimLeft(b.String(), "0")
	if len(x) != len(y) {
		return len(x) < len(y)
	}
	return x < y
}

// validationMessage keeps a schema failure to one line: the innermost failures, each
// naming where in the frame it is.
func validationMessage(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var parts []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			parts = append(parts, strings.Replace(e.Error(), "at ''", "at /", 1))
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(parts, "; ")
}

func short(b []byte) string {
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

// Document returns the parsed contract as generic JSON (numbers as json.Number), for tests
// that walk it, such as the one proving every close code is documented. Callers must not
// modify it.
func (v *FrameValidator) Document() map[string]any { return v.doc }
