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
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/cabildo/cabildo/internal/config"

	// Event time zones must load in minimal images without system tzdata.
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err the way Go's own tools do: help is no failure (0), a usage mistake
// is its own line(s) and 2, anything else one line and 1.
func exitCode(err error, stderr io.Writer) int {
	var ue *config.UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, err)
		return 2
	default:
		fmt.Fprintln(stderr, "cabildo:", err)
		return 1
	}
}

const usage = `Cabildo is the realtime backend for live events.

usage: cabildo <command> [flags]

commands:
  serve          run a node (in-process NATS and cache unless --nats-url/--redis-url)
  token create   mint an organizer or moderator token for one event
  loadgen        measure a running node (rest, ws, townhall, peer), a cold start (coldstart) or the floor for reads (floor)
  version        print the version of this binary
  help           print this help, or a command's: cabildo help serve

Run 'cabildo <command> --help' for its flags.
`

// run is the whole program, with everything it touches passed in, so tests can start
// complete nodes in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &config.UsageError{Msg: "no command given"}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		return tokenCommand(args[1:], getenv, stdout, stderr)
	case "loadgen":
		return loadgen(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		return printVersion(stdout)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && args[1] != "help" && !strings.HasPrefix(args[1], "-") {
			// `cabildo help serve` is `cabildo serve --help`, as with `go help build`.
			return run(ctx, append(args[1:], "--help"), getenv, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	return &config.UsageError{Msg: fmt.Sprintf("unknown command %q", args[0]), SeeHelp: true}
}

// isHelp reports whether args ask for help before anything else.
func isHelp(args []string) bool {
	return len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help")
}

// printHelp prints a command's synopsis and its flags, with the double dashes the README
// and every example use.
func printHelp(w io.Writer, synopsis string, fs *flag.FlagSet) error {
	fmt.Fprint(w, synopsis)
	fmt.Fprintln(w, "\nflags:")
	fs.VisitAll(func(f *flag.Flag) {
		typ, text := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			text += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%s\n      %s\n", line, text)
	})
	return flag.ErrHelp
}

// printVersion prints the module version and VCS revision Go stamped into the binary, and
// the Go that built it: what a bug report needs.
func printVersion(w io.Writer) error {
	version, rev, modified := "(devel)", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if buildVersion != "" {
		version = buildVersion
	}
	line := "cabildo " + version
	if rev != "" {
		line += " (" + rev[:min(12, len(rev))]
		if modified {
			line += ", modified"
		}
		line += ")"
	}
	_, err := fmt.Fprintf(w, "%s %s %s/%s\n", line, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// buildVersion is set by builds without VCS information, such as the Docker image (its
// context leaves .git out): -ldflags "-X main.buildVersion=…".
var buildVersion string
