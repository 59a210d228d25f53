// Package block holds what Strata knows of blocks in object storage: the bucket itself, and (as they land)
// meta.json with its Thanos section, upload/download, markers, the bucket index and the shipper.
package block

import (
	"os"
	"path/filepath"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/client"
	"go.yaml.in/yaml/v3"
)

// BucketConfig says where the bucket is. Either a Thanos objstore config file (ConfigFile, the format every
// Thanos component reads: `type: S3|GCS|AZURE|FILESYSTEM|…` plus `config:`), or the same inline (Type, Config,
// Prefix); with neither, a filesystem bucket under <data-dir>/bucket.
type BucketConfig struct {
	ConfigFile string         `yaml:"config_file,omitempty"`
	Type       string         `yaml:"type,omitempty"`
	Config     map[string]any `yaml:"config,omitempty"`
	Prefix     string         `yaml:"prefix,omitempty"`
}

// Validate checks that at most one way of configuring the bucket is used.
func (c BucketConfig) Validate() error {
	if c.ConfigFile != "" && c.Type != "" {
		return errors.New("objstore: set either config_file or an inline type/config, not both")
	}
	if c.Type == "" && (len(c.Config) > 0 || c.Prefix != "") {
		return errors.New("objstore: an inline config needs a type")
	}
	return nil
}

// NewBucket builds the bucket described by cfg, instrumented with strata_objstore_bucket_* metrics.
// dataDir is used only for the default filesystem bucket, which is created if missing.
func NewBucket(cfg BucketConfig, dataDir string, logger log.Logger, reg prometheus.Registerer) (objstore.Bucket, error) {
	var conf []byte
	switch {
	case cfg.ConfigFile != "":
		b, err := os.ReadFile(cfg.ConfigFile)
		if err != nil {
			return nil, errors.Wrapf(err, "read objstore config file %s", cfg.ConfigFile)
		}
		conf = b
	case cfg.Type != "":
		b, err := yaml.Marshal(client.BucketConfig{Type: objstore.ObjProvider(cfg.Type), Config: cfg.Config, Prefix: cfg.Prefix})
		if err != nil {
			return nil, errors.Wrap(err, "marshal inline objstore config")
		}
		conf = b
	default:
		dir := filepath.Join(dataDir, "bucket")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, errors.Wrapf(err, "create filesystem bucket directory %s", dir)
		}
		b, err := yaml.Marshal(client.BucketConfig{Type: objstore.FILESYSTEM, Config: map[string]string{"directory": dir}})
		if err != nil {
			return nil, errors.Wrap(err, "marshal default objstore config")
		}
		conf = b
	}
	bkt, err := client.NewBucket(logger, conf, "strata", nil)
	if err != nil {
		return nil, errors.Wrap(err, "create bucket client")
	}
	return objstore.WrapWithMetrics(bkt, prometheus.WrapRegistererWithPrefix("strata_", reg), bkt.Name()), nil
}
