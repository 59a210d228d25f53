package compact

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// compactorMetrics are the compactor's strata_compactor_* metrics.
type compactorMetrics struct {
	runs              prometheus.Counter
	runsFailed        prometheus.Counter
	lastSuccess       prometheus.Gauge
	groupsCompacted   prometheus.Counter
	groupsFailed      prometheus.Counter
	stepsFailed       *prometheus.CounterVec
	blocksCompacted   prometheus.Counter
	blocksMarkedDel   prometheus.Counter
	blocksNoCompact   *prometheus.CounterVec
	bytesDownloaded   prometheus.Counter
	blocksDeleted     prometheus.Counter
	groupDuration     prometheus.Histogram
	oldestUncompacted *prometheus.GaugeVec
	tenants           prometheus.Gauge
	tenantsOwned      prometheus.Gauge
}

func newCompactorMetrics(reg prometheus.Registerer) *compactorMetrics {
	f := promauto.With(reg)
	return &compactorMetrics{
		runs: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_runs_total", Help: "Compaction cycles started.",
		}),
		runsFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_runs_failed_total", Help: "Compaction cycles in which a tenant, group or step failed (the others went on).",
		}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_compactor_last_successful_run_timestamp_seconds", Help: "Unix time of the end of the last cycle without any failure.",
		}),
		groupsCompacted: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_groups_compacted_total", Help: "Compactions of a group's planned blocks into one block.",
		}),
		groupsFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_group_compactions_failed_total", Help: "Group compactions that failed and are retried next cycle.",
		}),
		stepsFailed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_compactor_tenant_steps_failed_total", Help: "Per-tenant steps of a cycle that failed, by step.",
		}, []string{"step"}),
		blocksCompacted: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_blocks_compacted_total", Help: "Source blocks compacted into a new block.",
		}),
		blocksMarkedDel: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_blocks_marked_for_deletion_total", Help: "Blocks marked for deletion by the compactor (compacted, or made redundant by a compacted block).",
		}),
		blocksNoCompact: f.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_compactor_blocks_marked_for_no_compaction_total", Help: "Blocks excluded from compaction by a no-compact mark, by reason.",
		}, []string{"reason"}),
		bytesDownloaded: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_downloaded_bytes_total", Help: "Bytes of blocks downloaded for compaction.",
		}),
		groupDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_compactor_group_compaction_duration_seconds",
			Help:    "Time of one group compaction: download, check, merge, upload, marks.",
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 8),
		}),
		blocksDeleted: f.NewCounter(prometheus.CounterOpts{
			Name: "strata_compactor_blocks_deleted_total", Help: "Blocks deleted by the cleaner (deletion mark older than the deletion delay, or partial).",
		}),
		oldestUncompacted: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_compactor_tenant_oldest_uncompacted_block_age_seconds",
			Help: "How far behind the compactor is per tenant: age of the oldest block waiting in a compaction plan (0 when none).",
		}, []string{"tenant"}),
		tenants: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_compactor_tenants", Help: "Tenants found in the bucket by the last cycle.",
		}),
		tenantsOwned: f.NewGauge(prometheus.GaugeOpts{
			Name: "strata_compactor_tenants_owned", Help: "Tenants of the last cycle this compactor owns (all of them without a compactor ring).",
		}),
	}
}
