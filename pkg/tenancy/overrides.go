package tenancy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/grafana/dskit/runtimeconfig"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

var errEOF = io.EOF

// TenantLimits returns the overrides of one tenant, or nil when it has none.
type TenantLimits interface {
	ByTenant(tenant string) *Limits
	AllByTenant() map[string]*Limits
}

// Overrides answers "what is tenant X's limit Y": the tenant's runtime override when there is one, else the
// defaults. It is safe for concurrent use; a runtime reload is seen by the next call.
type Overrides struct {
	defaults     Limits
	tenantLimits TenantLimits // may be nil: no runtime file
}

// NewOverrides returns Overrides over defaults and, optionally, runtime per-tenant limits.
func NewOverrides(defaults Limits, tenantLimits TenantLimits) *Overrides {
	return &Overrides{defaults: defaults, tenantLimits: tenantLimits}
}

// ForTenant returns the effective limits of a tenant. The result must not be modified.
func (o *Overrides) ForTenant(tenant string) *Limits {
	if o.tenantLimits != nil {
		if l := o.tenantLimits.ByTenant(tenant); l != nil {
			return l
		}
	}
	return &o.defaults
}

// Defaults returns the limits of every tenant without an override.
func (o *Overrides) Defaults() Limits { return o.defaults }

func (o *Overrides) IngestionRate(tenant string) float64 { return o.ForTenant(tenant).IngestionRate }
func (o *Overrides) IngestionBurstSize(tenant string) int {
	return o.ForTenant(tenant).IngestionBurstSize
}
func (o *Overrides) MaxGlobalSeriesPerUser(tenant string) int {
	return o.ForTenant(tenant).MaxGlobalSeriesPerUser
}
func (o *Overrides) MaxGlobalSeriesPerMetric(tenant string) int {
	return o.ForTenant(tenant).MaxGlobalSeriesPerMetric
}
func (o *Overrides) MaxMetadataLength(tenant string) int {
	return o.ForTenant(tenant).MaxMetadataLength
}
func (o *Overrides) MaxGlobalMetadataPerUser(tenant string) int {
	return o.ForTenant(tenant).MaxGlobalMetadataPerUser
}
func (o *Overrides) MaxGlobalMetadataPerMetric(tenant string) int {
	return o.ForTenant(tenant).MaxGlobalMetadataPerMetric
}
func (o *Overrides) MaxLabelNamesPerSeries(tenant string) int {
	return o.ForTenant(tenant).MaxLabelNamesPerSeries
}
func (o *Overrides) MaxLabelNameLength(tenant string) int {
	return o.ForTenant(tenant).MaxLabelNameLength
}
func (o *Overrides) MaxLabelValueLength(tenant string) int {
	return o.ForTenant(tenant).MaxLabelValueLength
}
func (o *Overrides) OutOfOrderTimeWindow(tenant string) time.Duration {
	return time.Duration(o.ForTenant(tenant).OutOfOrderTimeWindow)
}
func (o *Overrides) CreationGracePeriod(tenant string) time.Duration {
	return time.Duration(o.ForTenant(tenant).CreationGracePeriod)
}
func (o *Overrides) CompactorBlocksRetentionPeriod(tenant string) time.Duration {
	return time.Duration(o.ForTenant(tenant).CompactorBlocksRetentionPeriod)
}
func (o *Overrides) MaxCacheFreshness(tenant string) time.Duration {
	return time.Duration(o.ForTenant(tenant).MaxCacheFreshness)
}
func (o *Overrides) MaxQueryLength(tenant string) time.Duration {
	return time.Duration(o.ForTenant(tenant).MaxQueryLength)
}
func (o *Overrides) MaxFetchedSeriesPerQuery(tenant string) int {
	return o.ForTenant(tenant).MaxFetchedSeriesPerQuery
}
func (o *Overrides) MaxFetchedChunkBytesPerQuery(tenant string) int {
	return o.ForTenant(tenant).MaxFetchedChunkBytesPerQuery
}
func (o *Overrides) MaxSamples(tenant string) int { return o.ForTenant(tenant).MaxSamples }
func (o *Overrides) MaxQueryExpressionSizeBytes(tenant string) int {
	return o.ForTenant(tenant).MaxQueryExpressionSizeBytes
}
func (o *Overrides) MaxQueryParallelism(tenant string) int {
	return o.ForTenant(tenant).MaxQueryParallelism
}
func (o *Overrides) MaxTenants(tenant string) int { return o.ForTenant(tenant).MaxTenants }
func (o *Overrides) QueryReplicaLabels(tenant string) []string {
	return o.ForTenant(tenant).QueryReplicaLabels
}
func (o *Overrides) IngestionTenantShardSize(tenant string) int {
	return o.ForTenant(tenant).IngestionTenantShardSize
}

// RuntimeConfig configures the runtime file holding per-tenant overrides.
type RuntimeConfig struct {
	// File is the runtime file's path; empty means no per-tenant overrides.
	File string `yaml:"file"`
	// ReloadPeriod is how often the file is read again.
	ReloadPeriod time.Duration `yaml:"reload_period"`
}

// DefaultRuntimeConfig reloads every 10s, as Mimir.
func DefaultRuntimeConfig() RuntimeConfig { return RuntimeConfig{ReloadPeriod: 10 * time.Second} }

// Validate checks the runtime config.
func (c RuntimeConfig) Validate() error {
	if c.File != "" && c.ReloadPeriod <= 0 {
		return errors.Newf("runtime config reload period must be positive, got %s", c.ReloadPeriod)
	}
	return nil
}

// RuntimeOverridesManager reloads the runtime file every period (dskit's runtimeconfig.Manager does the
// watching, merging and metrics). A file that fails to parse or validate is logged, counted in
// strata_runtime_config_last_reload_successful{config="overrides"} = 0, and the last good content stays in force.
type RuntimeOverridesManager struct {
	mgr *runtimeconfig.Manager // nil when no file is configured
}

// NewRuntimeOverridesManager returns a manager for cfg. Start it with StartAndAwait (it fails when the file is
// bad at start, as Mimir does: a process should not start with limits it cannot read).
func NewRuntimeOverridesManager(cfg RuntimeConfig, defaults Limits, logger log.Logger, reg prometheus.Registerer) (*RuntimeOverridesManager, error) {
	if cfg.File == "" {
		return &RuntimeOverridesManager{}, nil
	}
	mcfg := runtimeconfig.Config{
		ReloadPeriod: cfg.ReloadPeriod,
		LoadPath:     []string{cfg.File},
		Loader: func(r io.Reader) (any, error) {
			data, err := io.ReadAll(r)
			if err != nil {
				return nil, errors.Wrap(err, "read runtime config")
			}
			return LoadRuntimeOverrides(data, defaults)
		},
	}
	mgr, err := runtimeconfig.New(mcfg, "overrides", prometheus.WrapRegistererWithPrefix("strata_", reg), log.With(logger, "component", "runtime-config"))
	if err != nil {
		return nil, errors.Wrap(err, "create runtime config manager")
	}
	return &RuntimeOverridesManager{mgr: mgr}, nil
}

// Service returns the dskit service to run, or nil when there is no runtime file.
func (m *RuntimeOverridesManager) Service() services.Service {
	if m.mgr == nil {
		return nil
	}
	return m.mgr
}

func (m *RuntimeOverridesManager) current() *RuntimeOverrides {
	if m.mgr == nil {
		return nil
	}
	ro, _ := m.mgr.GetConfig().(*RuntimeOverrides)
	return ro
}

// ByTenant implements TenantLimits.
func (m *RuntimeOverridesManager) ByTenant(tenant string) *Limits {
	if ro := m.current(); ro != nil {
		return ro.Overrides[tenant]
	}
	return nil
}

// AllByTenant implements TenantLimits.
func (m *RuntimeOverridesManager) AllByTenant() map[string]*Limits {
	if ro := m.current(); ro != nil {
		return ro.Overrides
	}
	return nil
}

// Run runs the manager until ctx is done, calling started once the file has been loaded (at once when there is
// no file). It fails when the file cannot be loaded at start.
func (m *RuntimeOverridesManager) Run(ctx context.Context, started func()) error {
	if m.mgr == nil {
		started()
		<-ctx.Done()
		return nil
	}
	if err := services.StartAndAwaitRunning(ctx, m.mgr); err != nil {
		return errors.Wrap(err, "start runtime config manager")
	}
	started()
	<-ctx.Done()
	return services.StopAndAwaitTerminated(context.Background(), m.mgr)
}

// UserLimitsHandler serves Mimir's /api/v1/user_limits: the requesting tenant's effective limits as JSON.
// It must sit behind HTTPMiddleware, which validated the tenant.
func (o *Overrides) UserLimitsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, err := TenantFromContext(r.Context())
		if err != nil {
			http.Error(w, err.Error(), HTTPStatus(err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(o.ForTenant(tenant))
	})
}

// Handler serves /runtime_config: the overrides in force, as YAML, tenants sorted. With ?mode=diff only the
// keys that differ from the defaults are shown (as Mimir).
func (o *Overrides) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var all map[string]*Limits
		if o.tenantLimits != nil {
			all = o.tenantLimits.AllByTenant()
		}
		tenants := make([]string, 0, len(all))
		for t := range all {
			tenants = append(tenants, t)
		}
		sort.Strings(tenants)

		doc := &yaml.Node{Kind: yaml.MappingNode}
		diff := r.URL.Query().Get("mode") == "diff"
		for _, t := range tenants {
			var n yaml.Node
			if err := n.Encode(all[t]); err != nil {
				http.Error(w, errors.Wrap(err, "encode overrides").Error(), http.StatusInternalServerError)
				return
			}
			if diff {
				var def yaml.Node
				if err := def.Encode(o.defaults); err != nil {
					http.Error(w, errors.Wrap(err, "encode defaults").Error(), http.StatusInternalServerError)
					return
				}
				n = diffMapping(&n, &def)
			}
			doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: t}, &n)
		}
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(map[string]*yaml.Node{"overrides": doc}); err != nil {
			http.Error(w, errors.Wrap(err, "encode runtime config").Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/yaml; charset=utf-8")
		_, _ = w.Write(buf.Bytes())
	})
}

// diffMapping returns the entries of mapping a whose scalar values differ from those in b.
func diffMapping(a, b *yaml.Node) yaml.Node {
	def := map[string]string{}
	for i := 0; i+1 < len(b.Content); i += 2 {
		def[b.Content[i].Value] = b.Content[i+1].Value
	}
	out := yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i+1 < len(a.Content); i += 2 {
		if v, ok := def[a.Content[i].Value]; ok && v == a.Content[i+1].Value {
			continue
		}
		out.Content = append(out.Content, a.Content[i], a.Content[i+1])
	}
	return out
}
