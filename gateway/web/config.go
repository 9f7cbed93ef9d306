package web

import "github.com/fieldgate/fieldgate/gateway/config"

// Config is the web section of the gateway config (`web:` in YAML). It is
// defined in gateway/config (config.Web), which this package imports.
type Config = config.Web

// DefaultConfig returns the web section's defaults.
func DefaultConfig() Config { return config.DefaultWeb() }
