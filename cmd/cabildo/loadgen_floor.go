package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/cabildo/cabildo/internal/config"
)

// loadgenFloor serves one read's bytes, as a node answered them, from the least a Go
// server can be: a goroutine per connection on the standard library's netpoller, no HTTP
// library, each answer prepared in full beforehand and written with one writev. What a
// node costs per request beyond it is Cabildo's; what it costs against nginx is Go's
// network model, which no Go server escapes (docs/benchmarks.md).
func loadgenFloor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := config.NewFlagSet("loadgen floor")
	addr := fs.String("addr", "127.0.0.1:18082", "address to serve on (loopback only)")
	src := fs.String("url", "http://127.0.0.1:8080/v1/events/ogp-sanjose-2027/schedule", "the read to copy, fetched once from a running node")
	if err := config.ParseArgs(fs, args); errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, "usage: cabildo loadgen floor [flags]\n\nServes the bytes of one read of a running node, plain, gzip and 304, from a minimal Go server.\n", fs)
	} else if err != nil {
		return err
	}
	if err := loopbackURL("loadgen floor", "--url", *src); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !isLoopback(host) {
		return fmt.Errorf("loadgen floor: --addr %q: serve on a loopback address", *addr)
	}
	f, err := fetchFloor(ctx, *src)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "{\"scenario\":\"floor\",\"addr\":%q,\"bytes\":%d,\"gzip_bytes\":%d,\"etag\":%q}\n",
		ln.Addr().String(), len(f.plain[1]), len(f.gzip[1]), f.etag)
	go func() { <-ctx.Done(); ln.Close() }()
	f.serve(ln)
	return nil
}

// floor holds the three answers: header and body of the plain and gzip 200, and the 304.
type floor struct {
	plain, gzip  [2][]byte
	notModified  []byte
	etag, etagGz []byte
}

func fetchFloor(ctx context.Context, src string) (*floor, error) {
	f := &floor{}
	for _, gz := range []bool{false, true} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			return nil, fmt.Errorf("loadgen floor: fetch %s: %w", src, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("loadgen floor: fetch %s: %s %v", src, resp.Status, err)
		}
		var h bytes.Buffer
		h.WriteString("HTTP/1.1 200 OK\r\n")
		for _, k := range []string{"Content-Type", "Content-Encoding", "Content-Language", "Etag", "Last-Modified", "Cache-Control", "Vary", "Date"} {
			if v := resp.Header.Get(k); v != "" {
				fmt.Fprintf(&h, "%s: %s\r\n", k, v)
			}
		}
		fmt.Fprintf(&h, "Content-Length: %d\r\n\r\n", len(body))
		if gz {
			f.gzip = [2][]byte{h.Bytes(), body}
			f.etagGz = []byte(resp.Header.Get("Etag"))
		} else {
			f.plain = [2][]byte{h.Bytes(), body}
			f.etag = []byte(resp.Header.Get("Etag"))
		}
	}
	if len(f.etag) == 0 {
		return nil, fmt.Errorf("loadgen floor: %s has no ETag", src)
	}
	f.notModified = fmt.Appendf(nil, "HTTP/1.1 304 Not Modified\r\nEtag: %s\r\nCache-Control: public, max-age=0, must-revalidate\r\nVary: Accept-Language, Accept-Encoding\r\n\r\n", f.etag)
	return f, nil
}

func (f *floor) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go f.conn(c)
	}
}

// conn answers the requests of one keep-alive connection in order. A request is whatever
// ends with an empty line; only If-None-Match and Accept-Encoding are looked at.
func (f *floor) conn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 0, 8192)
	for {
		end := bytes.Index(buf, []byte("\r\n\r\n"))
		if end < 0 {
			if len(buf) == cap(buf) {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			n, err := c.Read(buf[len(buf):cap(buf)])
			if err != nil {
				return
			}
			buf = buf[:len(buf)+n]
			continue
		}
		req := buf[:end+4]
		var out net.Buffers
		switch inm := header(req, "if-none-match"); {
		case inm != nil && (bytes.Equal(inm, f.etag) || bytes.Equal(inm, f.etagGz)):
			out = net.Buffers{f.notModified}
		case bytes.Contains(header(req, "accept-encoding"), []byte("gzip")):
			out = net.Buffers{f.gzip[0], f.gzip[1]}
		default:
			out = net.Buffers{f.plain[0], f.plain[1]}
		}
		if _, err := out.WriteTo(c); err != nil {
			return
		}
		buf = buf[:copy(buf, buf[end+4:])]
	}
}

// header returns the value of the first header named name (lower case) in req.
func header(req []byte, name string) []byte {
	for line := range bytes.SplitSeq(req, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && len(k) == len(name) && string(bytes.ToLower(k)) == name {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}
