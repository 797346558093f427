package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/internal/token"
)

const tokenUsage = `usage: cabildo token create --event ID [--role organizer|moderator] [--subject NAME] [--ttl 72h]
                            [--data-dir D | --signing-key HEX | --signing-key-file F]

Prints a signed token for one event and role on stdout (TOKEN=$(cabildo token create …)).
It is signed with the key of the server's data directory, which 'cabildo serve' creates at
its first start, or with the cluster's key given to every node (CABILDO_SIGNING_KEY).
An organizer token for an event that does not exist yet creates it: PUT /v1/events/<id>.
`

// tokenCommand is `cabildo token`: only `create` so far.
func tokenCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		return &config.UsageError{Cmd: "token", Msg: "missing command: cabildo token create", SeeHelp: true}
	case isHelp(args):
		return printHelp(stdout, tokenUsage, config.TokenFlags())
	case args[0] == "create":
		return tokenCreate(args[1:], getenv, stdout, stderr)
	}
	return &config.UsageError{Cmd: "token", Msg: fmt.Sprintf("unknown command %q: only create", args[0]), SeeHelp: true}
}

func tokenCreate(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadToken(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, tokenUsage, config.TokenFlags())
	}
	if err != nil {
		return err
	}
	role, err := token.ParseRole(cfg.Role)
	if err != nil {
		return &config.UsageError{Cmd: "token create", Msg: "--role must be organizer or moderator"}
	}
	var keys *token.Keys
	if cfg.SigningKey != "" {
		keys, err = signingKeys(cfg.SigningKey, "", false)
	} else {
		keys, err = signingKeys("", cfg.SigningKeyFile, false)
		if errors.Is(err, os.ErrNotExist) {
			// Making up a key here would sign a token that no server accepts.
			start := "--data-dir " + cfg.DataDir
			if cfg.SigningKeyFile != filepath.Join(cfg.DataDir, token.KeyFile) {
				start = "--signing-key-file " + cfg.SigningKeyFile
			}
			return fmt.Errorf("no signing key at %s: start 'cabildo serve %s' once (it creates the key), or pass the cluster's key with --signing-key or --signing-key-file",
				cfg.SigningKeyFile, start)
		}
	}
	if err != nil {
		return err
	}
	tok, claims, err := keys.Mint(cfg.Event, role, cfg.Subject, cfg.TTL)
	if err != nil {
		return err
	}
	// The token alone goes to stdout, so TOKEN=$(cabildo token create …) works; the note is
	// for the person reading the terminal. The log is out of reach here, so whether the
	// event exists is not known: say what the token would do if it does not.
	fmt.Fprintf(stderr, "%s token for event %s (subject %s), valid until %s\n",
		role, cfg.Event, cfg.Subject, claims.ExpiresAt.Time.Local().Format(time.RFC3339))
	if role == token.Organizer {
		fmt.Fprintf(stderr, "if event %s does not exist yet, this token creates it: PUT /v1/events/%s\n", cfg.Event, cfg.Event)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// signingKeys uses the key given directly (clusters pass one through the environment) or
// the key file; only serve may create the file, with a fresh key, at its first start.
func signingKeys(hexKey, file string, create bool) (*token.Keys, error) {
	var (
		key []byte
		err error
	)
	switch {
	case hexKey != "":
		key, err = token.ParseKey(hexKey)
	case create:
		key, err = token.LoadOrCreateKeyFile(file)
	default:
		key, err = token.LoadKeyFile(file)
	}
	if err != nil {
		return nil, err
	}
	return token.New(key)
}
