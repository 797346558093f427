package config

import "os"

// ComponentsRequired reports whether a test must fail, rather than skip, when a component
// it needs (redis-server, say) is missing: under CI=true, where `make test` installed every
// one of them, a missing component is a broken run, not a laptop without it.
func ComponentsRequired() bool { return os.Getenv("CI") == "true" }
