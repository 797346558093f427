// Package mobileapi embeds the contracts of Cabildo's client-facing APIs: openapi.yaml
// describes the REST API. They are the source of truth: the server serves them as they
// are, and tests validate real responses against them, so a change to the API starts here.
package mobileapi

import _ "embed"

// OpenAPI is the OpenAPI 3.0 document of the REST API (openapi.yaml).
//
//go:embed openapi.yaml
var OpenAPI []byte

// AsyncAPI is the AsyncAPI 3.0 document of the realtime websocket protocol (asyncapi.yaml).
//
//go:embed asyncapi.yaml
var AsyncAPI []byte
