// dashcheck: validates Grafana dashboards against Grafana's own schema, as
// the grafana-foundation-sdk generates it (strict decoding: a field Grafana
// does not know, or of the wrong type, is an error; then its validation
// rules), and prints every query expression, one per line, so the tests can
// check each names a metric reprise exports. Tests only.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashcheck DASHBOARD.json...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
	}
}

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var d dashboard.Dashboard
	if err := failed(d.UnmarshalJSONStrict(raw)); err != nil {
		return fmt.Errorf("not a valid dashboard: %w", err)
	}
	if err := failed(d.Validate()); err != nil {
		return fmt.Errorf("invalid: %w", err)
	}
	if d.Title == nil || d.Uid == nil {
		return fmt.Errorf("a dashboard needs a title and a uid")
	}
	// Each panel on its own, with its options and queries as their plugins
	// define them. (The SDK's decoding keeps errors but drops what nested
	// decoders return without one: an empty error list is returned typed,
	// so it is taken for an error and then counted as none. Errors are all
	// this needs; the queries are read from the JSON itself.)
	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &top); err != nil || len(top.Panels) == 0 {
		return fmt.Errorf("no panels")
	}
	for i, rawPanel := range top.Panels {
		p := &dashboard.Panel{}
		if err := failed(p.UnmarshalJSONStrict(rawPanel)); err != nil {
			return fmt.Errorf("panels[%d]: %w", i, err)
		}
		var queries struct {
			Title   string `json:"title"`
			Targets []struct {
				Datasource struct {
					Type string `json:"type"`
				} `json:"datasource"`
				Expr string `json:"expr"`
			} `json:"targets"`
		}
		if err := json.Unmarshal(rawPanel, &queries); err != nil || len(queries.Targets) == 0 {
			return fmt.Errorf("panel %q has no query", queries.Title)
		}
		for _, t := range queries.Targets {
			if t.Datasource.Type != "prometheus" || strings.TrimSpace(t.Expr) == "" {
				return fmt.Errorf("panel %q: a query that is not a Prometheus expression", queries.Title)
			}
			fmt.Println(strings.ReplaceAll(t.Expr, "\n", " "))
		}
	}
	return nil
}

// failed is err unless it is an empty list of build errors: the SDK returns
// its error list typed, so an empty one is a non-nil error interface.
func failed(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}
