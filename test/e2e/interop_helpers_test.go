package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/efficientgo/core/testutil"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/stratametrics/strata/pkg/store"
)

type dbMap map[string]*tsdb.DB

func (m dbMap) DB(t string) store.TenantDB {
	if db, ok := m[t]; ok {
		return db
	}
	return nil
}

func (m dbMap) Tenants() []string {
	var out []string
	for t := range m {
		out = append(out, t)
	}
	return out
}

func copyDir(src, dst string) error {
	return filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o750)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			_ = out.Close()
			return err
		}
		return out.Close()
	})
}

// addThanosMeta adds the Thanos section to a Prometheus block's meta.json.
func addThanosMeta(t *testing.T, path string, lbls map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	testutil.Ok(t, err)
	var meta map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // int64 timestamps do not survive float64
	testutil.Ok(t, dec.Decode(&meta))
	meta["thanos"] = map[string]any{"version": 1, "labels": lbls, "downsample": map[string]any{"resolution": 0}, "source": "sidecar"}
	b, err = json.Marshal(meta)
	testutil.Ok(t, err)
	testutil.Ok(t, os.WriteFile(path, b, 0o600))
}
