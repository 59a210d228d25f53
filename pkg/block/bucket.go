// Package block holds what Strata knows of blocks in object storage: the bucket itself, and (as they land)
// meta.json with its Thanos section, upload/download, markers, the bucket index and the shipper.
package block

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/client"
	"github.com/thanos-io/objstore/providers/filesystem"
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
	bkt, err := newBucketClient(logger, conf)
	if err != nil {
		return nil, errors.Wrap(err, "create bucket client")
	}
	return objstore.WrapWithMetrics(bkt, prometheus.WrapRegistererWithPrefix("strata_", reg), bkt.Name()), nil
}

// newBucketClient is objstore's client.NewBucket, except that a filesystem bucket's uploads are atomic
// (atomicFSBucket): a process killed mid-upload, or a reader racing an upload, never meets a truncated object.
func newBucketClient(logger log.Logger, conf []byte) (objstore.Bucket, error) {
	var bc client.BucketConfig
	if err := yaml.Unmarshal(conf, &bc); err != nil || !strings.EqualFold(string(bc.Type), string(objstore.FILESYSTEM)) {
		return client.NewBucket(logger, conf, "strata", nil) // its parsing errors are the ones to report
	}
	dec := yaml.NewDecoder(bytes.NewReader(conf))
	dec.KnownFields(true) // strict, as client.NewBucket
	if err := dec.Decode(&bc); err != nil {
		return nil, errors.Wrap(err, "parse objstore config")
	}
	raw, err := yaml.Marshal(bc.Config)
	if err != nil {
		return nil, errors.Wrap(err, "marshal filesystem bucket config")
	}
	var fc filesystem.Config // not strict, as objstore's filesystem provider
	if err := yaml.Unmarshal(raw, &fc); err != nil {
		return nil, errors.Wrap(err, "parse filesystem bucket config")
	}
	if fc.Directory == "" {
		return nil, errors.New("filesystem bucket: missing directory")
	}
	level.Info(logger).Log("msg", "loading bucket configuration", "type", objstore.FILESYSTEM, "directory", fc.Directory)
	bkt, err := newAtomicFSBucket(fc.Directory)
	if err != nil {
		return nil, err
	}
	return objstore.NewPrefixedBucket(bkt, bc.Prefix), nil
}
