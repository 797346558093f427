// Command cabildo is the realtime backend for live events: `cabildo serve` runs a node,
// `cabildo token create` mints organizer and moderator tokens, `cabildo loadgen` measures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	// Event time zones must load in minimal images without system tzdata.
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cabildo:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: cabildo <command> [flags]

commands:
  serve          run a node (in-process NATS and cache unless --nats-url/--redis-url)
  token create   mint an organizer or moderator token for one event
  loadgen        measure a running node (REST reads and acknowledged writes)

Run 'cabildo <command> -h' for its flags.
`

// run is the whole program, with everything it touches passed in, so tests can start
// complete nodes in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		if len(args) < 2 || args[1] != "create" {
			return errors.New("usage: cabildo token create --event ID --role organizer|moderator [--data-dir D]")
		}
		return tokenCreate(args[2:], getenv, stdout, stderr)
	case "loadgen":
		return loadgen(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
