package main

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/efficientgo/core/errors"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/stratametrics/strata/pkg/block"
	"github.com/stratametrics/strata/pkg/query"
	"github.com/stratametrics/strata/pkg/query/frontend"
	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/ring"
	"github.com/stratametrics/strata/pkg/server"
	"github.com/stratametrics/strata/pkg/store/gateway"
	"github.com/stratametrics/strata/pkg/store/sidecar"
	"github.com/stratametrics/strata/pkg/tenancy"
)

// Config is the one YAML file every component reads (--config.file); each uses the sections it needs and
// ignores the rest. Flags override the file; /config shows the result.
type Config struct {
	Log           logConfig             `yaml:"log"`
	Runtime       runtimeConfig         `yaml:"runtime"`
	Server        server.Config         `yaml:"server"`
	DataDir       string                `yaml:"data_dir"`
	Auth          tenancy.Config        `yaml:"auth"`
	Objstore      block.BucketConfig    `yaml:"objstore"`
	Limits        tenancy.Limits        `yaml:"limits"`
	RuntimeConfig tenancy.RuntimeConfig `yaml:"runtime_config"`

	Memberlist   ring.MemberlistConfig  `yaml:"memberlist"`
	IngesterRing ring.Config            `yaml:"ingester_ring"`
	Ingester     receive.IngesterConfig `yaml:"ingester"`
	Distributor  receive.PushConfig     `yaml:"distributor"`
	Querier      query.Config           `yaml:"querier"`
	// QueryFrontend is `strata query-frontend`'s, and the frontend's of `strata all` (without downstream URLs).
	QueryFrontend frontend.Config `yaml:"query_frontend"`

	StoreGatewayRing ring.Config    `yaml:"store_gateway_ring"`
	StoreGateway     gateway.Config `yaml:"store_gateway"`

	// Sidecar is validated only by `strata sidecar`, which needs its tenant and TSDB path.
	Sidecar   sidecar.Config  `yaml:"sidecar"`
	Compactor compactorConfig `yaml:"compactor"`
	// CompactorRing splits the tenants between compactors (replication factor 1: one owner per tenant).
	CompactorRing ring.Config `yaml:"compactor_ring"`
}

type logConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// runtimeConfig tunes the Go runtime, as Prometheus's `runtime` config block does.
type runtimeConfig struct {
	// GOGC is the garbage collector's target percentage (Go's GOGC) unless the GOGC environment variable is set;
	// 0 (the default) is the component's own (ingesterGOGC, otherGOGC).
	GOGC int `yaml:"gogc"`
}

const (
	// ingesterGOGC is the default GOGC of the components that hold TSDB heads (ingester, all): their heap is
	// mostly long-lived series, and each percent of GOGC holds a percent of it again as headroom between
	// collections. The write path makes little garbage per sample, so collecting more often costs little CPU
	// (measured, `make bench-write`: 40 gave the same CPU per sample as 75 with ~17% less RSS; 20 then cost 13%
	// more CPU. Once the write path's own garbage was pooled away, the collector took ~2% of an ingester's CPU at
	// 40, and 20 was chosen: see issue 17's notes).
	ingesterGOGC = 20
	// otherGOGC is Prometheus's default, for the components whose heap is mostly garbage of queries.
	otherGOGC = 75
)

// gogc is the GOGC a component runs with.
func (c runtimeConfig) gogc(component string) int {
	switch {
	case c.GOGC > 0:
		return c.GOGC
	case component == "ingester" || component == "all":
		return ingesterGOGC
	}
	return otherGOGC
}

func (c runtimeConfig) Validate() error {
	if c.GOGC < 0 {
		return errors.Newf("runtime.gogc must be positive (or 0: the component's default), got %d (set the GOGC environment variable to turn the collector off)", c.GOGC)
	}
	return nil
}

func defaultConfig() Config {
	return Config{
		Log:           logConfig{Level: "info", Format: "logfmt"},
		Runtime:       runtimeConfig{},
		Server:        server.DefaultConfig(),
		DataDir:       "./data",
		Auth:          tenancy.DefaultConfig(),
		Limits:        tenancy.DefaultLimits(),
		RuntimeConfig: tenancy.DefaultRuntimeConfig(),
		Memberlist:    ring.DefaultMemberlistConfig(),
		IngesterRing:  ring.DefaultConfig(),
		Ingester:      receive.DefaultIngesterConfig(),
		Distributor:   receive.DefaultPushConfig(),
		Querier:       query.DefaultConfig(),
		QueryFrontend: frontend.DefaultConfig(),

		StoreGatewayRing: ring.DefaultConfig(),
		StoreGateway:     gateway.DefaultConfig(),
		Sidecar:          sidecar.DefaultConfig(),
		Compactor:        defaultCompactorConfig(),
		CompactorRing:    defaultCompactorRingConfig(),
	}
}

// Validate checks every section.
func (c *Config) Validate() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return errors.Newf("log level must be one of debug, info, warn, error; got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "logfmt", "json":
	default:
		return errors.Newf("log format must be logfmt or json; got %q", c.Log.Format)
	}
	if c.DataDir == "" {
		return errors.New("data_dir must be set")
	}
	for _, v := range []interface{ Validate() error }{c.Runtime, c.Server, c.Auth, c.Objstore, c.Limits, c.RuntimeConfig, c.IngesterRing, c.Ingester, c.Distributor, c.Querier, c.QueryFrontend, c.StoreGatewayRing, c.StoreGateway, c.CompactorRing} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return c.validateCompactor()
}

// registerCommonFlags registers the flags every component shares, bound to cfg through b.
func registerCommonFlags(app *kingpin.Application, b *binder, cfg *Config) {
	b.String(app.Flag("log.level", "Log level: debug, info, warn, error."), &cfg.Log.Level)
	b.String(app.Flag("log.format", "Log format: logfmt or json."), &cfg.Log.Format)
	b.Int(app.Flag("runtime.gogc", "The Go garbage collector's target percentage (GOGC), unless the GOGC environment variable is set."), &cfg.Runtime.GOGC)
	b.String(app.Flag("http-address", "Address the HTTP server listens on."), &cfg.Server.HTTPAddress)
	b.String(app.Flag("grpc-address", "Address the gRPC server listens on."), &cfg.Server.GRPCAddress)
	b.Duration(app.Flag("server.graceful-shutdown-timeout", "How long in-flight requests may take once the process is told to stop."), &cfg.Server.GracefulShutdownTimeout)
	b.Int(app.Flag("server.grpc-max-recv-msg-size-bytes", "Largest gRPC message the server accepts, in bytes (ResourceExhausted beyond)."), &cfg.Server.GRPCServerMaxRecvMsgSize)
	b.Int(app.Flag("server.grpc-max-send-msg-size-bytes", "Largest gRPC message the server sends, in bytes."), &cfg.Server.GRPCServerMaxSendMsgSize)
	b.String(app.Flag("data-dir", "Directory for local state (TSDBs, caches, the default filesystem bucket)."), &cfg.DataDir)
	b.Bool(app.Flag("auth.multitenancy-enabled", "Require a tenant (X-Scope-OrgID) on every request; when disabled every request is tenant 'anonymous'."), &cfg.Auth.MultitenancyEnabled)
	registerAuthFlags(app, b, cfg)
	b.String(app.Flag("objstore.config-file", "Thanos objstore config file (type: S3|GCS|AZURE|FILESYSTEM…). Default: a filesystem bucket under <data-dir>/bucket."), &cfg.Objstore.ConfigFile)
	b.String(app.Flag("runtime-config.file", "YAML file with per-tenant limit overrides, reloaded periodically."), &cfg.RuntimeConfig.File)
	b.Duration(app.Flag("runtime-config.reload-period", "How often the runtime config file is read again."), &cfg.RuntimeConfig.ReloadPeriod)
	b.Strings(app.Flag("memberlist.join", "host:port of another cluster member to gossip with (repeatable). Without it the ring lives in this process only."), &cfg.Memberlist.JoinMembers)
	b.String(app.Flag("memberlist.bind-addr", "Address to listen on for gossip."), &cfg.Memberlist.BindAddr)
	b.Int(app.Flag("memberlist.bind-port", "Port to listen on for gossip."), &cfg.Memberlist.BindPort)
	b.String(app.Flag("memberlist.advertise-addr", "Address other members reach this one at (default: the bind address)."), &cfg.Memberlist.AdvertiseAddr)
	b.Int(app.Flag("ingester.ring.replication-factor", "Ingesters each series is written to (capped at the number of ingesters)."), &cfg.IngesterRing.ReplicationFactor)
	b.Bool(app.Flag("distributor.zone-awareness-enabled", "Place the replicas of a series in distinct availability zones."), &cfg.IngesterRing.ZoneAwarenessEnabled)
	b.Duration(app.Flag("ingester.ring.heartbeat-period", "How often an ingester heartbeats into the ring."), &cfg.IngesterRing.HeartbeatPeriod)
	b.Duration(app.Flag("ingester.ring.heartbeat-timeout", "After this long without a heartbeat an ingester is unhealthy."), &cfg.IngesterRing.HeartbeatTimeout)
	b.Duration(app.Flag("ingester.ring.auto-forget-period", "An ingester unhealthy for this long is removed from the ring."), &cfg.IngesterRing.AutoForgetPeriod)
}

// loadConfig reads the config file (if any) over the defaults in cfg, then applies the flags the user set.
func loadConfig(cfg *Config, file string, b *binder) error {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return errors.Wrapf(err, "read config file %s", file)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && err.Error() != "EOF" {
			return errors.Wrapf(err, "parse config file %s", file)
		}
	}
	b.apply()
	return errors.Wrap(cfg.Validate(), "invalid configuration")
}

// binder binds kingpin flags to fields of the config so that a flag overrides the file only when the user
// set it. Each flag's default shown in --help is the field's default.
type binder struct{ applies []func() }

func (b *binder) apply() {
	for _, f := range b.applies {
		f()
	}
}

func bindFlag[T any](b *binder, f *kingpin.FlagClause, dst *T, def string, parse func(*kingpin.FlagClause) *T) {
	var set bool
	v := parse(f.Default(def).IsSetByUser(&set))
	b.applies = append(b.applies, func() {
		if set {
			*dst = *v
		}
	})
}

func (b *binder) String(f *kingpin.FlagClause, dst *string) {
	bindFlag(b, f, dst, *dst, (*kingpin.FlagClause).String)
}

func (b *binder) Duration(f *kingpin.FlagClause, dst *time.Duration) {
	bindFlag(b, f, dst, dst.String(), func(f *kingpin.FlagClause) *time.Duration {
		v := &parsedValue[time.Duration]{flag: f.Model().Name, parse: parseFlagDuration, format: time.Duration.String}
		f.SetValue(v)
		return &v.v
	})
}

// parseFlagDuration parses a Go duration ("90m", "1h30m") or a Prometheus one ("15d", "2w"), as Thanos's and
// Prometheus's duration flags accept.
func parseFlagDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, nil
	}
	if md, merr := model.ParseDuration(s); merr == nil {
		return time.Duration(md), nil
	}
	return 0, err
}

func (b *binder) Int(f *kingpin.FlagClause, dst *int) {
	bindFlag(b, f, dst, strconv.Itoa(*dst), (*kingpin.FlagClause).Int)
}

// Strings binds a repeatable flag; given at least once, it replaces the file's list.
func (b *binder) Strings(f *kingpin.FlagClause, dst *[]string) {
	var set bool
	v := f.IsSetByUser(&set).Strings()
	b.applies = append(b.applies, func() {
		if set {
			*dst = *v
		}
	})
}

// StringMap binds a repeatable name=value flag; given at least once, it replaces the file's map.
func (b *binder) StringMap(f *kingpin.FlagClause, dst *map[string]string) {
	var set bool
	v := f.IsSetByUser(&set).StringMap()
	b.applies = append(b.applies, func() {
		if set {
			*dst = *v
		}
	})
}

// parsedValue is a kingpin.Value whose parse errors name the flag (kingpin's own say only "invalid duration").
type parsedValue[T any] struct {
	v      T
	flag   string
	parse  func(string) (T, error)
	format func(T) string
}

func (p *parsedValue[T]) Set(s string) error {
	v, err := p.parse(s)
	if err != nil {
		return errors.Wrapf(err, "invalid value %q for flag --%s", s, p.flag)
	}
	p.v = v
	return nil
}

func (p *parsedValue[T]) String() string { return p.format(p.v) }

func (b *binder) Bool(f *kingpin.FlagClause, dst *bool) {
	def := "false"
	if *dst {
		def = "true"
	}
	bindFlag(b, f, dst, def, (*kingpin.FlagClause).Bool)
}
