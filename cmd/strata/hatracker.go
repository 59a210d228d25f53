package main

import (
	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"

	"github.com/stratametrics/strata/pkg/receive"
	"github.com/stratametrics/strata/pkg/server"
)

// registerHATrackerFlags registers the flags of the distributor's HA tracker (Mimir's flag names).
func registerHATrackerFlags(cmd *kingpin.CmdClause, b *binder, cfg *Config) {
	ha := &cfg.Distributor.HATracker
	b.Bool(cmd.Flag("distributor.ha-tracker.enable", "Deduplicate HA pairs of Prometheus servers: per tenant with accept_ha_samples, store only the elected replica's samples of each cluster, without the replica label."), &ha.EnableHATracker)
	b.Duration(cmd.Flag("distributor.ha-tracker.update-timeout", "Renew the elected replica's last-seen time in the KV store at most this often."), &ha.UpdateTimeout)
	b.Duration(cmd.Flag("distributor.ha-tracker.update-timeout-jitter-max", "Largest random time added to the update timeout, spreading the distributors' KV updates."), &ha.UpdateTimeoutJitterMax)
	b.Duration(cmd.Flag("distributor.ha-tracker.failover-timeout", "ha_tracker.failover_timeout: elect another replica of a cluster after the elected one sent nothing for this long (at least 1s more than the update timeout and its jitter)."), &ha.FailoverTimeout)
}

// setupHATracker builds the HA tracker over the rings' KV store when it is enabled (nil otherwise), runs it, and
// serves its page at /distributor/ha_tracker.
func setupHATracker(p *process, logger log.Logger) (*receive.HATracker, error) {
	var t *receive.HATracker
	if p.cfg.Distributor.HATracker.EnableHATracker {
		client, err := p.ingesterRing.kv.NewClient("distributor-hatracker", receive.HAReplicaCodec())
		if err != nil {
			return nil, errSetup(err, "HA tracker")
		}
		t = receive.NewHATracker(p.cfg.Distributor.HATracker, client, p.overrides, logger, p.reg)
		addContextActor(p.g, t.Run)
	}
	p.srv.Handle("/distributor/ha_tracker", p.admin(receive.HATrackerHandler(t)))
	p.srv.AddLinks("Distributor", server.Link{Path: "/distributor/ha_tracker", Desc: "HA tracker: the elected replica of each HA cluster"})
	return t, nil
}
