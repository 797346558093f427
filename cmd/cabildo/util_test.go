package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

func b64(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tryDo is do for a node that may vanish mid-request: transport errors come back instead
// of failing the test, and no contract check runs on half-answers.
func tryDo(n *node, method, path, tok string, body any) (response, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return response{}, err
	}
	hr, err := http.NewRequest(method, n.base+path, bytes.NewReader(raw))
	if err != nil {
		return response{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}
