package store

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/stratametrics/strata/pkg/tenancy"
)

var tenantsPage = template.Must(template.New("tenants").Parse(`<!DOCTYPE html>
<html><head><title>Store-gateway tenants</title></head><body>
<h1>Store-gateway: tenants</h1>
<p>Tenants this store-gateway serves blocks of (the blocks it owns in the ring).</p>
<table border="1" cellpadding="4"><tr><th>Tenant</th><th>Blocks</th></tr>
{{range .}}<tr><td><a href="tenant/{{.Tenant}}/blocks">{{.Tenant}}</a></td><td>{{.Blocks}}</td></tr>
{{else}}<tr><td colspan="2">none yet</td></tr>{{end}}
</table></body></html>`))

var blocksPage = template.Must(template.New("blocks").Parse(`<!DOCTYPE html>
<html><head><title>Store-gateway blocks of {{.Tenant}}</title></head><body>
<h1>Store-gateway: blocks of tenant {{.Tenant}}</h1>
<table border="1" cellpadding="4"><tr><th>Block</th><th>Min time</th><th>Max time</th><th>Duration</th><th>Resolution</th><th>Level</th><th>Source</th><th>Series</th><th>Samples</th><th>Size</th><th>Labels</th><th>Index-header</th><th>Marked for deletion</th></tr>
{{range .Blocks}}<tr><td>{{.ID}}</td><td>{{.Min}}</td><td>{{.Max}}</td><td>{{.Duration}}</td><td>{{.Resolution}}</td><td>{{.Level}}</td><td>{{.Source}}</td><td>{{.Series}}</td><td>{{.Samples}}</td><td>{{.Size}}</td><td>{{.Labels}}</td><td>{{if .InMemory}}loaded{{else}}on disk{{end}}</td><td>{{.DeletionMarkedAt}}</td></tr>
{{else}}<tr><td colspan="13">no blocks</td></tr>{{end}}
</table><p><a href="../../tenants">all tenants</a></p></body></html>`))

type tenantRow struct {
	Tenant string `json:"tenant"`
	Blocks int    `json:"blocks"`
}

type blockRow struct {
	ID         string            `json:"block_id"`
	MinTime    int64             `json:"min_time"`
	MaxTime    int64             `json:"max_time"`
	Min        string            `json:"-"`
	Max        string            `json:"-"`
	Duration   string            `json:"-"`
	Resolution string            `json:"resolution"`
	Level      int               `json:"compaction_level"`
	Source     string            `json:"source"`
	Series     uint64            `json:"series"`
	Samples    uint64            `json:"samples"`
	SizeBytes  int64             `json:"size_bytes"`
	Size       string            `json:"-"`
	LabelMap   map[string]string `json:"labels"`
	Labels     string            `json:"-"`
	InMemory   bool              `json:"index_header_loaded"`
	// DeletionMarkedAt is the time of the block's deletion mark (RFC 3339), empty when it has none.
	DeletionMarkedAt string `json:"deletion_marked_at,omitempty"`
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json") || r.URL.Query().Get("format") == "json"
}

// TenantsHandler serves the page of the tenants served (/store-gateway/tenants; JSON with Accept: application/json).
func (s *BucketStore) TenantsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rows []tenantRow
		for _, t := range s.Tenants() {
			rows = append(rows, tenantRow{Tenant: t, Blocks: len(s.Blocks(t))})
		}
		render(w, r, tenantsPage, rows, rows)
	})
}

// BlocksHandler serves the page of a tenant's blocks (/store-gateway/tenant/{tenant}/blocks): time range,
// labels, resolution, source, size; JSON with Accept: application/json.
func (s *BucketStore) BlocksHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := r.PathValue("tenant")
		if err := tenancy.ValidateTenantID(tenant); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rows := []blockRow{}
		for _, b := range s.Blocks(tenant) {
			rows = append(rows, blockRow{
				ID: b.ID.String(), MinTime: b.MinTime, MaxTime: b.MaxTime,
				Min:        time.UnixMilli(b.MinTime).UTC().Format(time.RFC3339),
				Max:        time.UnixMilli(b.MaxTime).UTC().Format(time.RFC3339),
				Duration:   (time.Duration(b.MaxTime-b.MinTime) * time.Millisecond).String(),
				Resolution: resolutionName(b.Resolution), Level: b.Level, Source: b.Source,
				Series: b.Series, Samples: b.Samples, SizeBytes: b.SizeBytes, Size: humanBytes(b.SizeBytes),
				LabelMap: b.Labels.Map(), Labels: b.Labels.String(), InMemory: b.IndexHeaderInMemory,
			})
			if !b.DeletionMarkedAt.IsZero() {
				rows[len(rows)-1].DeletionMarkedAt = b.DeletionMarkedAt.UTC().Format(time.RFC3339)
			}
		}
		render(w, r, blocksPage, struct {
			Tenant string
			Blocks []blockRow
		}{tenant, rows}, rows)
	})
}

func render(w http.ResponseWriter, r *http.Request, t *template.Template, data, jsonData any) {
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jsonData)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := t.Execute(w, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
