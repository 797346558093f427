package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// UsageError is a mistake in a command line or in a CABILDO_* variable: main prints it as
// it is, one line per mistake, and exits 2, as Go's own tools do. Cmd is the command as
// typed after "cabildo" ("serve", "token create").
type UsageError struct {
	Cmd string
	Msg string
	// SeeHelp adds the pointer to the command's help, for mistakes the help answers
	// (a flag that does not exist); a bad value is explained by the message itself.
	SeeHelp bool
}

func (e *UsageError) Error() string {
	prefix := "cabildo"
	if e.Cmd != "" {
		prefix += " " + e.Cmd
	}
	if e.SeeHelp {
		return fmt.Sprintf("%s: %s (see '%s --help')", prefix, e.Msg, prefix)
	}
	return prefix + ": " + e.Msg
}

// newFlagSet returns a flag set that prints nothing: the flag package's own report (the
// error, then every flag) buried the one line that mattered, and went to stderr even for
// -h. Commands print their help themselves, on stdout.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// NewFlagSet is newFlagSet for commands whose flags live outside this package (loadgen):
// parse them with ParseArgs.
func NewFlagSet(name string) *flag.FlagSet { return newFlagSet(name) }

// ParseArgs parses command-line flags only. -h and --help give flag.ErrHelp; every other
// mistake is a *UsageError that names the flag and, for a bad value, the format wanted.
func ParseArgs(fs *flag.FlagSet, args []string) error {
	var bad error
	fs.VisitAll(func(f *flag.Flag) { f.Value = &explained{Value: f.Value, name: "--" + f.Name, bad: &bad} })
	defer fs.VisitAll(func(f *flag.Flag) { f.Value = f.Value.(*explained).Value })
	err := fs.Parse(args)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		return err
	case bad != nil:
		return &UsageError{Cmd: fs.Name(), Msg: bad.Error()}
	default:
		return &UsageError{Cmd: fs.Name(), Msg: flagMistake(err), SeeHelp: true}
	}
	if fs.NArg() > 0 {
		return &UsageError{Cmd: fs.Name(), Msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), SeeHelp: true}
	}
	return nil
}

// parse is ParseArgs, then CABILDO_<FLAG> for every flag not given on the command line.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := ParseArgs(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := getenv(env(f.Name)); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, &UsageError{Cmd: fs.Name(), Msg: explain(env(f.Name), f.Value, v, err).Error()})
			}
		}
	})
	return errors.Join(errs...)
}

// usage turns validation errors (each naming its flag) into usage errors of command fs.
func usage(fs *flag.FlagSet, err error) error {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			errs = append(errs, &UsageError{Cmd: fs.Name(), Msg: e.Error()})
		}
		return errors.Join(errs...)
	}
	return &UsageError{Cmd: fs.Name(), Msg: err.Error()}
}

// flagMistake rewords the flag package's errors that involve no value (the value errors
// are caught by explained, which knows the flag's type).
func flagMistake(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return "unknown flag --" + strings.TrimLeft(name, "-")
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return "--" + strings.TrimLeft(name, "-") + " needs a value"
	}
	return msg
}

// explained wraps a flag's value to keep the reason a value was refused: the flag package
// reduces it to "parse error", which told a user typing --ttl 5 nothing about units.
type explained struct {
	flag.Value
	name string
	bad  *error
}

func (e *explained) Set(v string) error {
	err := e.Value.Set(v)
	if err != nil && *e.bad == nil {
		*e.bad = explain(e.name, e.Value, v, err)
	}
	return err
}

// IsBoolFlag keeps --demo a switch that takes no value.
func (e *explained) IsBoolFlag() bool {
	b, ok := e.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func (e *explained) Get() any {
	if g, ok := e.Value.(flag.Getter); ok {
		return g.Get()
	}
	return nil
}

// explain says what was wrong with value v of the flag (or variable) called name.
func explain(name string, val flag.Value, v string, err error) error {
	var got any
	if g, ok := val.(flag.Getter); ok {
		got = g.Get()
	}
	switch got.(type) {
	case time.Duration:
		return fmt.Errorf("%s: %q is not a duration; use a unit, such as 72h or 30m", name, v)
	case bool:
		return fmt.Errorf("%s: %q is not true or false", name, v)
	case int, int64, uint, uint64:
		return fmt.Errorf("%s: %q is not a whole number", name, v)
	case float64:
		if _, perr := strconv.ParseFloat(v, 64); perr != nil {
			return fmt.Errorf("%s: %q is not a number", name, v)
		}
	}
	return fmt.Errorf("%s: %q: %v", name, v, err)
}
