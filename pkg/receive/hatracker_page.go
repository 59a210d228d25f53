package receive

import (
	"encoding/json"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"
)

// HAElected is one HA cluster's elected replica as this distributor sees it (the /distributor/ha_tracker page).
type HAElected struct {
	Tenant         string    `json:"tenant"`
	Cluster        string    `json:"cluster"`
	Replica        string    `json:"replica"`
	ElectedAt      time.Time `json:"elected_at"`
	ElectedChanges int64     `json:"elected_changes"`
	// LastSeen is when a distributor last wrote that the replica sent samples (it renews it every update timeout).
	LastSeen time.Time `json:"last_seen"`
	// UpdateIn is how long until this distributor renews LastSeen on the next sample; FailoverIn how long until
	// another replica may be elected (negative: it may be now).
	UpdateIn   time.Duration `json:"update_in_ns"`
	FailoverIn time.Duration `json:"failover_in_ns"`
}

// Elected returns the elected replica of every cluster, sorted by tenant and cluster.
func (t *HATracker) Elected() []HAElected {
	now := t.now()
	t.mtx.RLock()
	out := make([]HAElected, 0, len(t.elected))
	for tenant, byCluster := range t.elected {
		for cluster, d := range byCluster {
			seen := time.UnixMilli(d.ReceivedAt)
			out = append(out, HAElected{
				Tenant: tenant, Cluster: cluster, Replica: d.Replica, ElectedAt: time.UnixMilli(d.ElectedAt).UTC(), ElectedChanges: d.ElectedChanges,
				LastSeen: seen.UTC(), UpdateIn: seen.Add(t.updateTimeout).Sub(now), FailoverIn: seen.Add(t.cfg.FailoverTimeout).Sub(now),
			})
		}
	}
	t.mtx.RUnlock()
	slices.SortFunc(out, func(a, b HAElected) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		return strings.Compare(a.Cluster, b.Cluster)
	})
	return out
}

var haTrackerPage = template.Must(template.New("ha").Funcs(template.FuncMap{
	"ts":  func(t time.Time) string { return t.Format(time.RFC3339Nano) },
	"dur": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
}).Parse(`<!DOCTYPE html>
<html><head><title>HA tracker</title></head><body>
<h1>Distributor: HA tracker</h1>
{{if not .Enabled}}<p>The HA tracker is disabled (distributor.ha_tracker.enable_ha_tracker).</p>{{else}}
<p>The elected replica of each HA cluster, as this distributor sees it (failover after {{dur .Failover}} without samples from it).</p>
<table border="1" cellpadding="4"><tr><th>Tenant</th><th>Cluster</th><th>Elected replica</th><th>Elected at</th><th>Elections</th><th>Last seen</th><th>Update in</th><th>Failover in</th></tr>
{{range .Rows}}<tr><td>{{.Tenant}}</td><td>{{.Cluster}}</td><td>{{.Replica}}</td><td>{{ts .ElectedAt}}</td><td>{{.ElectedChanges}}</td><td>{{ts .LastSeen}}</td><td>{{dur .UpdateIn}}</td><td>{{dur .FailoverIn}}</td></tr>
{{else}}<tr><td colspan="8">no HA cluster yet</td></tr>{{end}}
</table>{{end}}</body></html>`))

// HATrackerHandler serves /distributor/ha_tracker: the elected replica of each cluster (JSON with Accept:
// application/json or ?format=json). t may be nil: the tracker is disabled.
func HATrackerHandler(t *HATracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rows := []HAElected{}
		var failover time.Duration
		if t != nil {
			rows, failover = t.Elected(), t.cfg.FailoverTimeout
		}
		if strings.Contains(r.Header.Get("Accept"), "application/json") || r.URL.Query().Get("format") == "json" {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(struct {
				Enabled bool        `json:"enabled"`
				Elected []HAElected `json:"elected"`
			}{t != nil, rows})
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		data := struct {
			Enabled  bool
			Failover time.Duration
			Rows     []HAElected
		}{t != nil, failover, rows}
		if err := haTrackerPage.Execute(w, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}
