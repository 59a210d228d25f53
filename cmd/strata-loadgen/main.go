// Command strata-loadgen pushes Prometheus remote-write load at an endpoint and reports what was acknowledged;
// `make bench-write` (scripts/bench-write.sh) runs it against Strata. The work is in pkg/loadgen.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/stratametrics/strata/pkg/loadgen"
)

func main() { os.Exit(run(os.Args[1:])) }

// run runs the command and returns its exit code: 2 for bad flags, 1 if no sample was acknowledged.
func run(args []string) int {
	cfg, asJSON, err := parseArgs(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}
	g, err := loadgen.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res := g.Run(ctx)

	summaryTo := io.Writer(os.Stdout)
	if asJSON {
		summaryTo = os.Stderr
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "error: write result:", err)
			return 1
		}
	}
	fmt.Fprintln(summaryTo, summary(res))
	if res.SamplesAcked == 0 {
		return 1
	}
	return 0
}

// parseArgs returns the run's config and whether to print the result as JSON.
func parseArgs(args []string) (loadgen.Config, bool, error) {
	cfg := loadgen.DefaultConfig()
	app := kingpin.New("strata-loadgen", "Push Prometheus remote-write load (fresh samples of synthetic series, "+
		"round after round) and report acknowledged samples per second. Exits 1 if no sample was acknowledged.")
	app.HelpFlag.Short('h')
	app.Flag("url", "Remote-write endpoint.").Default("http://127.0.0.1:8080/api/v1/push").StringVar(&cfg.URL)
	app.Flag("tenant", "Tenant, sent as X-Scope-OrgID (empty: no header).").Default(cfg.Tenant).StringVar(&cfg.Tenant)
	app.Flag("series", "Number of distinct series; every round sends one sample of each.").
		Default(fmt.Sprint(cfg.Series)).IntVar(&cfg.Series)
	app.Flag("labels-per-series", fmt.Sprintf("Labels per series, __name__ included (%d-%d).",
		loadgen.MinLabelsPerSeries, loadgen.MaxLabelsPerSeries)).
		Default(fmt.Sprint(cfg.LabelsPerSeries)).IntVar(&cfg.LabelsPerSeries)
	app.Flag("series-per-request", "Series (so samples) per request, like Prometheus's max_samples_per_send.").
		Default(fmt.Sprint(cfg.SeriesPerRequest)).IntVar(&cfg.SeriesPerRequest)
	app.Flag("concurrency", "Requests in flight at once.").Default(fmt.Sprint(cfg.Concurrency)).IntVar(&cfg.Concurrency)
	app.Flag("duration", "How long to send.").Default(cfg.Duration.String()).DurationVar(&cfg.Duration)
	app.Flag("round-interval", "Start round r no earlier than r×interval after the start, like a scrape "+
		"interval; 0 sends rounds back to back, as fast as the server acknowledges.").
		Default("0s").DurationVar(&cfg.RoundInterval)
	app.Flag("request-timeout", "Timeout of one request; a failed request is counted, never retried.").
		Default(cfg.RequestTimeout.String()).DurationVar(&cfg.RequestTimeout)
	app.Flag("max-failures", "Stop early once this many requests failed (0: never).").
		Default(fmt.Sprint(cfg.MaxFailures)).IntVar(&cfg.MaxFailures)
	protocol := app.Flag("protocol", "Remote-write protocol: v1 (prometheus.WriteRequest) or v2 "+
		"(io.prometheus.write.v2.Request).").Default(string(cfg.Protocol)).Enum(string(loadgen.ProtocolV1), string(loadgen.ProtocolV2))
	extra := app.Flag("extra-label", "A constant label name=value added to every series, like a Prometheus's external "+
		"labels (e.g. --extra-label=cluster=c1 --extra-label=__replica__=a for one replica of an HA pair); it replaces "+
		"a generated label of the same name. Repeatable.").Strings()
	asJSON := app.Flag("json", "Print the result as JSON on stdout (the summary goes to stderr).").Bool()

	if _, err := app.Parse(args); err != nil {
		return cfg, false, errors.Wrap(err, "parse command line")
	}
	cfg.Protocol = loadgen.Protocol(*protocol)
	for _, kv := range *extra {
		name, value, ok := strings.Cut(kv, "=")
		if !ok {
			return cfg, false, errors.Newf("--extra-label must be name=value, got %q", kv)
		}
		cfg.ExtraLabels = append(cfg.ExtraLabels, labels.Label{Name: name, Value: value})
	}
	return cfg, *asJSON, cfg.Validate()
}

// summary is the one-line account of a run.
func summary(r loadgen.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d samples acked in %.1fs = %.0f samples/s (%d series × %d labels, %d per request, "+
		"%d in flight, %.1f rounds); requests ok %d, failed %d",
		r.Protocol, r.SamplesAcked, r.ElapsedSeconds, r.SamplesPerSecond, r.Series, r.LabelsPerSeries,
		r.SeriesPerRequest, r.Concurrency, r.Rounds, r.RequestsOK, r.RequestsFailedTotal)
	if len(r.RequestsFailed) > 0 {
		keys := make([]string, 0, len(r.RequestsFailed))
		for k := range r.RequestsFailed {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d: %q", k, r.RequestsFailed[k], r.FailureMessages[k]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, "; "))
	}
	dur := func(s float64) time.Duration {
		return time.Duration(s * float64(time.Second)).Round(100 * time.Microsecond)
	}
	fmt.Fprintf(&b, "; latency p50 %v p99 %v max %v; %.2f MB sent (%.1f B/sample); loadgen CPU %.2fs; stopped: %s",
		dur(r.Latency.P50), dur(r.Latency.P99), dur(r.Latency.Max), float64(r.BytesSent)/1e6,
		float64(r.BytesSent)/max(1, float64(r.SamplesAcked+r.SamplesFailed)), r.LoadgenCPUSeconds, r.StopReason)
	return b.String()
}
