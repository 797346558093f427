package main

import (
	"fmt"
	"io"

	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/internal/token"
)

func tokenCreate(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadToken(args, getenv, stderr)
	if err != nil {
		return err
	}
	role, err := token.ParseRole(cfg.Role)
	if err != nil {
		return err
	}
	keys, err := signingKeys(cfg.SigningKey, cfg.SigningKeyFile)
	if err != nil {
		return err
	}
	tok, _, err := keys.Mint(cfg.Event, role, cfg.Subject, cfg.TTL)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// signingKeys uses the key given directly (clusters pass one through the environment) or
// the key file, created with a fresh key at first use.
func signingKeys(hexKey, file string) (*token.Keys, error) {
	var (
		key []byte
		err error
	)
	if hexKey != "" {
		key, err = token.ParseKey(hexKey)
	} else {
		key, err = token.LoadOrCreateKeyFile(file)
	}
	if err != nil {
		return nil, err
	}
	return token.New(key)
}
