package receive

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// tenantRegisterer is one tenant's registerer in an ingester, as Mimir keeps a registry per user: it registers on
// the process's registerer with the label tenant="<tenant>" and remembers what it registered, so that closing the
// tenant's TSDB unregisters all of it (a tenant's TSDB opened again registers the same collectors again, which
// would otherwise fail, and the series of a closed tenant would stay exported forever).
type tenantRegisterer struct {
	reg prometheus.Registerer

	mtx        sync.Mutex
	collectors []prometheus.Collector
}

func newTenantRegisterer(reg prometheus.Registerer, tenant string) *tenantRegisterer {
	return &tenantRegisterer{reg: prometheus.WrapRegistererWith(prometheus.Labels{"tenant": tenant}, reg)}
}

// Register implements prometheus.Registerer.
func (r *tenantRegisterer) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.mtx.Lock()
	r.collectors = append(r.collectors, c)
	r.mtx.Unlock()
	return nil
}

// MustRegister implements prometheus.Registerer.
func (r *tenantRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister implements prometheus.Registerer.
func (r *tenantRegisterer) Unregister(c prometheus.Collector) bool {
	r.mtx.Lock()
	for k, rc := range r.collectors {
		if rc == c {
			r.collectors = append(r.collectors[:k], r.collectors[k+1:]...)
			break
		}
	}
	r.mtx.Unlock()
	return r.reg.Unregister(c)
}

// unregisterAll unregisters everything registered through r.
func (r *tenantRegisterer) unregisterAll() {
	r.mtx.Lock()
	cs := r.collectors
	r.collectors = nil
	r.mtx.Unlock()
	for _, c := range cs {
		r.reg.Unregister(c)
	}
}

// deleteTenantMetrics deletes a closed tenant's series of the ingester's metrics, and of
// strata_discarded_samples_total (Mimir drops a user's metrics when its TSDB is closed as idle).
func (i *Ingester) deleteTenantMetrics(tenant string) {
	m := i.metrics
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{m.appendedSamples, m.activeSeries, m.walReplay, m.shippedBlocks, m.shipFailures} {
		v.DeleteLabelValues(tenant)
	}
	if i.discarded != nil {
		i.discarded.deleteTenant(tenant)
	}
}

// deleteTenant deletes every series of a tenant.
func (d *DiscardedSamples) deleteTenant(tenant string) {
	d.total.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
}
