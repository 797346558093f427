package natslog

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedOptions configure the in-process NATS server of the embedded default.
type EmbeddedOptions struct {
	// StoreDir is where JetStream keeps the log on disk.
	StoreDir string
	// Listen is an optional "host:port" for other processes (a second gateway, the nats
	// CLI). Empty means in-process connections only.
	Listen string
	// ServerName names the server in its logs and in stream placement.
	ServerName string
}

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts an in-process NATS server with JetStream storing to StoreDir. Every
// stored message is fsynced before it is acknowledged (SyncAlways): on a single node an
// acknowledged write must survive power loss, not only a process kill.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	opts := &server.Options{
		ServerName: o.ServerName,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
		DontListen: o.Listen == "",
		MaxPayload: 8 << 20,
	}
	if opts.ServerName == "" {
		opts.ServerName = "cabildo-embedded"
	}
	if o.Listen != "" {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("natslog: embedded listen address %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("natslog: embedded listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natslog: embedded server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("natslog: embedded server not ready within 10s")
	}
	return &Embedded{srv: srv}, nil
}

// Connect opens a client connection to the embedded server without a socket.
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(e.srv), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("natslog: connect in-process: %w", err)
	}
	return nc, nil
}

// ClientURL is the URL other processes use, when the server listens.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// SyncAlways reports whether the server fsyncs every stored message.
func (e *Embedded) SyncAlways() bool {
	return e.srv.JetStreamConfig() != nil && e.srv.JetStreamConfig().SyncAlways
}

// Shutdown stops the server and waits until it has.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
