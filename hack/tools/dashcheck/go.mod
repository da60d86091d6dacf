// dashcheck: validates reprise's Grafana dashboard against Grafana's schema (tests only).
module reprise.dev/hack/tools/dashcheck

go 1.26.0

require github.com/grafana/grafana-foundation-sdk/go v0.0.22
