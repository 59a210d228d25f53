package compact

import (
	"encoding/json"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TenantStatus is what the compactor's /compactor/tenants page shows of a tenant, as of its last pass (and the
// pass under way).
type TenantStatus struct {
	Tenant string `json:"tenant"`
	// LastRun is when the tenant's last finished pass started.
	LastRun time.Time `json:"last_run"`
	// Running is the group (key) or step being worked on now, empty between passes.
	Running string `json:"running,omitempty"`
	// LiveBlocks are the blocks not marked for deletion at the last sync.
	LiveBlocks int `json:"live_blocks"`
	// PlannedGroups are the groups with blocks to compact (group key → blocks in the plan), after the last pass:
	// empty when the compactor is up to date.
	PlannedGroups map[string]int `json:"planned_groups"`
	// FailedGroups and FailedSteps are the groups and steps that failed in the last pass, with the error.
	FailedGroups map[string]string `json:"failed_groups"`
	FailedSteps  map[string]string `json:"failed_steps"`
	// OldestUncompacted is the upload time (ULID) of the oldest block waiting in a plan; zero when none.
	OldestUncompacted time.Time `json:"oldest_uncompacted,omitempty"`
	// NoCompact are the live blocks excluded from compaction, and why.
	NoCompact []NoCompactRow `json:"no_compact"`
}

// NoCompactRow is a block marked no-compact.
type NoCompactRow struct {
	Block   string    `json:"block_id"`
	Reason  string    `json:"reason"`
	Details string    `json:"details"`
	Time    time.Time `json:"time"`
}

// statusBoard holds the TenantStatus of every tenant seen, for the page.
type statusBoard struct {
	mtx     sync.Mutex
	tenants map[string]*TenantStatus
}

func newStatusBoard() *statusBoard { return &statusBoard{tenants: map[string]*TenantStatus{}} }

func (b *statusBoard) update(tenant string, f func(*TenantStatus)) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	s, ok := b.tenants[tenant]
	if !ok {
		s = &TenantStatus{Tenant: tenant}
		b.tenants[tenant] = s
	}
	f(s)
}

func (b *statusBoard) remove(tenant string) {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	delete(b.tenants, tenant)
}

// Status returns the status of every tenant seen, sorted by tenant.
func (c *Compactor) Status() []TenantStatus {
	c.status.mtx.Lock()
	defer c.status.mtx.Unlock()
	out := make([]TenantStatus, 0, len(c.status.tenants))
	for _, s := range c.status.tenants {
		out = append(out, *s) // the maps and slices are replaced, never modified in place
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out
}

var tenantsPage = template.Must(template.New("tenants").Funcs(template.FuncMap{"ts": func(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339)
}, "mib": func(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }}).Parse(`<!DOCTYPE html>
<html><head><title>Compactor tenants</title></head><body>
<h1>Compactor: tenants</h1>
{{with .Progress}}{{if not .Start.IsZero}}<p>Cycle started {{ts .Start}}{{if .Running}} (running){{end}}: {{.DoneGroups}}/{{.PlannedGroups}} group compactions,
{{.DoneBlocks}}/{{.PlannedBlocks}} blocks, {{mib .DoneBytes}}/{{mib .PlannedBytes}} MiB, elapsed {{.Elapsed}}{{if .Running}}, ETA {{.ETA}}{{end}}.</p>{{end}}{{end}}
<p>As of each tenant's last pass. Planned groups: blocks still to compact (none when up to date).</p>
<table border="1" cellpadding="4"><tr><th>Tenant</th><th>Last pass</th><th>Running</th><th>Live blocks</th><th>Planned groups (blocks)</th><th>Failed groups</th><th>Failed steps</th><th>Oldest uncompacted block</th><th>No-compact blocks</th></tr>
{{range .Tenants}}<tr><td>{{.Tenant}}</td><td>{{ts .LastRun}}</td><td>{{.Running}}</td><td>{{.LiveBlocks}}</td>
<td>{{range $k, $v := .PlannedGroups}}{{$k}} ({{$v}})<br>{{end}}</td>
<td>{{range $k, $v := .FailedGroups}}{{$k}}: {{$v}}<br>{{end}}</td>
<td>{{range $k, $v := .FailedSteps}}{{$k}}: {{$v}}<br>{{end}}</td>
<td>{{ts .OldestUncompacted}}</td>
<td>{{range .NoCompact}}{{.Block}}: {{.Reason}} — {{.Details}} ({{ts .Time}})<br>{{end}}</td></tr>
{{else}}<tr><td colspan="9">no pass yet</td></tr>{{end}}
</table></body></html>`))

// TenantsHandler serves /compactor/tenants: per tenant the planned, running and failed groups, the oldest
// uncompacted block, the blocks marked no-compact and why (JSON with Accept: application/json or ?format=json).
func (c *Compactor) TenantsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rows := c.Status()
		if strings.Contains(r.Header.Get("Accept"), "application/json") || r.URL.Query().Get("format") == "json" {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(rows)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		data := struct {
			Progress CycleProgress
			Tenants  []TenantStatus
		}{c.Progress(), rows}
		if err := tenantsPage.Execute(w, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}
