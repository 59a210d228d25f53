package frontend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"sync"

	"github.com/efficientgo/core/errors"

	"github.com/stratametrics/strata/pkg/query"
)

// DataRange is the span of sample timestamps a query reads, ms, both ends inclusive: its evaluation range
// widened by lookback, range selectors, subqueries, offsets and @ (promql.FindMinMaxTime).
type DataRange struct{ MinT, MaxT int64 }

// GenerationSource tells what a tenant's data looked like at one moment, as far as cached extents care. The
// results cache takes a Snapshot before it sends a sub-request downstream and stores the snapshot's Token with
// the extent it caches; before it uses a cached extent it takes a new Snapshot and asks it whether the token is
// still Valid. A source must make Valid false whenever a query of the extent's data range, sent now, could
// answer differently than it did when the token was taken.
type GenerationSource interface {
	// Name names the source in logs and in the encoding of tokens.
	Name() string
	// Snapshot returns the current state of a tenant's data. An error means the cache is not used for the
	// request (neither read nor written).
	Snapshot(ctx context.Context, tenant string) (Snapshot, error)
}

// Snapshot is a GenerationSource's view at one moment. Safe for concurrent use.
type Snapshot interface {
	// Token is what an extent of data range r computed after this snapshot stores.
	Token(r DataRange) []byte
	// Valid reports whether an extent of data range r stored with token (from an earlier snapshot) still holds.
	Valid(token []byte, r DataRange) bool
}

// snapshots is one Snapshot per (tenant, source): tokens are the length-prefixed concatenation of each one's.
type snapshots []Snapshot

// takeSnapshots asks every source about every tenant (tenants sorted, sources in order).
func takeSnapshots(ctx context.Context, sources []GenerationSource, tenants []string) (snapshots, error) {
	out := make(snapshots, 0, len(sources)*len(tenants))
	for _, t := range tenants {
		for _, s := range sources {
			snap, err := s.Snapshot(ctx, t)
			if err != nil {
				return nil, errors.Wrapf(err, "data generation of tenant %s from %s", t, s.Name())
			}
			out = append(out, snap)
		}
	}
	return out, nil
}

func (s snapshots) token(r DataRange) []byte {
	var b []byte
	for _, snap := range s {
		t := snap.Token(r)
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	return b
}

func (s snapshots) valid(token []byte, r DataRange) bool {
	for _, snap := range s {
		n, k := binary.Uvarint(token)
		if k <= 0 || uint64(len(token)-k) < n {
			return false
		}
		if !snap.Valid(token[k:k+int(n)], r) {
			return false
		}
		token = token[k+int(n):]
	}
	return len(token) == 0
}

// BucketGeneration is the bucket side: the blocks the queriers read for a tenant, as the querier's own
// BlocksFinder sees them (uploaded longer than the upload grace period ago, not marked for deletion longer
// than ignore_deletion_mark_delay ago). An extent's token is a hash of the blocks overlapping its data range,
// so a block uploaded (or imported, or compacted into) or deleted in that range changes it.
//
// The finder must apply the querier's rules (query.NewBucketBlocksFinder with the querier's upload grace
// period and deletion-mark delay, over the same bucket). Its refresh interval must stay below the upload
// grace period and the deletion-mark delay, as the querier's must: then a block enters (and leaves) the
// frontend's view and every querier's view at the same moment, its upload time plus the grace period.
type BucketGeneration struct {
	finder query.BlocksFinder
}

// NewBucketGeneration returns the bucket side over finder.
func NewBucketGeneration(finder query.BlocksFinder) *BucketGeneration {
	return &BucketGeneration{finder: finder}
}

// Name implements GenerationSource.
func (*BucketGeneration) Name() string { return "bucket" }

// Snapshot implements GenerationSource.
func (g *BucketGeneration) Snapshot(ctx context.Context, tenant string) (Snapshot, error) {
	blocks, err := g.finder.Blocks(ctx, tenant, math.MinInt64, math.MaxInt64)
	if err != nil {
		return nil, errors.Wrapf(err, "list the blocks of tenant %s", tenant)
	}
	blocks = slices.Clone(blocks)
	sort.Slice(blocks, func(i, j int) bool { return blocks[i].ID.Compare(blocks[j].ID) < 0 })
	return bucketSnapshot(blocks), nil
}

type bucketSnapshot []query.BlockRef

func (s bucketSnapshot) Token(r DataRange) []byte {
	h := sha256.New()
	var b []byte
	for _, blk := range s {
		if blk.MinTime > r.MaxT || blk.MaxTime <= r.MinT {
			continue
		}
		b = append(b[:0], blk.ID[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(blk.MinTime))
		b = binary.BigEndian.AppendUint64(b, uint64(blk.MaxTime))
		h.Write(b)
	}
	return h.Sum(nil)
}

func (s bucketSnapshot) Valid(token []byte, r DataRange) bool { return bytes.Equal(s.Token(r), token) }

// IngesterLog is one ingester's log of a tenant's late writes (receive.LateWritesState; the same JSON): every
// push holding a sample older than now - max_cache_freshness (plus a margin) is numbered and remembered with its
// oldest sample.
type IngesterLog struct {
	Epoch  string `json:"epoch"`
	Seq    uint64 `json:"seq"`
	Since  uint64 `json:"since"`
	Events []struct {
		Seq     uint64 `json:"seq"`
		MinTime int64  `json:"min_time"`
	} `json:"events"`
}

// IngesterLogs returns every ingester's log of a tenant, by ingester ID. It must cover every ingester a
// querier may read (an error otherwise).
type IngesterLogs func(ctx context.Context, tenant string) (map[string]IngesterLog, error)

// IngesterGeneration is the ingester side. The ingesters accept samples relative to each series' newest one and
// the TSDB head (in-order within half a block of the head's newest sample, out-of-order within the tenant's
// out_of_order_time_window; a new, restarted or idle-reopened TSDB accepts anything not older than its last
// block), not relative to now: a range of any age can still receive samples. So the ingesters number every
// commit older than the cache boundary; an extent stores each ingester's epoch and last number, and is valid
// while every ingester is the same process (epoch) and no late write after that number reaches back into its
// data range.
type IngesterGeneration struct {
	logs IngesterLogs
}

// NewIngesterGeneration returns the ingester side over logs.
func NewIngesterGeneration(logs IngesterLogs) *IngesterGeneration {
	return &IngesterGeneration{logs: logs}
}

// Name implements GenerationSource.
func (*IngesterGeneration) Name() string { return "ingesters" }

// Snapshot implements GenerationSource.
func (g *IngesterGeneration) Snapshot(ctx context.Context, tenant string) (Snapshot, error) {
	logs, err := g.logs(ctx, tenant)
	if err != nil {
		return nil, errors.Wrapf(err, "read the ingesters' late writes of tenant %s", tenant)
	}
	ids := make([]string, 0, len(logs))
	for id := range logs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return &ingesterSnapshot{ids: ids, logs: logs}, nil
}

type ingesterSnapshot struct {
	ids  []string // sorted
	logs map[string]IngesterLog
}

type ingesterMark struct {
	ID    string `json:"id"`
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

func (s *ingesterSnapshot) Token(DataRange) []byte {
	marks := make([]ingesterMark, 0, len(s.ids))
	for _, id := range s.ids {
		marks = append(marks, ingesterMark{ID: id, Epoch: s.logs[id].Epoch, Seq: s.logs[id].Seq})
	}
	b, _ := json.Marshal(marks)
	return b
}

func (s *ingesterSnapshot) Valid(token []byte, r DataRange) bool {
	var marks []ingesterMark
	if err := json.Unmarshal(token, &marks); err != nil || len(marks) != len(s.ids) {
		return false // an ingester joined or left: its data may differ
	}
	for k, m := range marks {
		l := s.logs[m.ID]
		if m.ID != s.ids[k] || m.Epoch != l.Epoch || m.Seq > l.Seq || m.Seq < l.Since {
			return false // another process (restarted), or the log after m.Seq is forgotten
		}
		for _, e := range l.Events {
			if e.Seq > m.Seq && e.MinTime <= r.MaxT {
				return false // a sample written after the extent was computed falls in (or before) its range
			}
		}
	}
	return true
}

// IngesterLogsOverHTTP reads each ingester's log from its /ingester/late_writes endpoint. addrs returns the
// ingesters' HTTP base URLs by ingester ID (e.g. from the ring); every one must answer.
func IngesterLogsOverHTTP(client *http.Client, addrs func() (map[string]string, error)) IngesterLogs {
	return func(ctx context.Context, tenant string) (map[string]IngesterLog, error) {
		urls, err := addrs()
		if err != nil {
			return nil, errors.Wrap(err, "list the ingesters")
		}
		var (
			mtx      sync.Mutex
			wg       sync.WaitGroup
			firstErr error
			out      = make(map[string]IngesterLog, len(urls))
		)
		for id, base := range urls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := fetchIngesterLog(ctx, client, base, tenant)
				mtx.Lock()
				defer mtx.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = errors.Wrapf(err, "ingester %s", id)
					}
					return
				}
				out[id] = l
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return nil, firstErr
		}
		return out, nil
	}
}

func fetchIngesterLog(ctx context.Context, client *http.Client, base, tenant string) (IngesterLog, error) {
	var l IngesterLog
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ingester/late_writes?tenant="+url.QueryEscape(tenant), nil)
	if err != nil {
		return l, errors.Wrap(err, "build the request")
	}
	resp, err := client.Do(req)
	if err != nil {
		return l, errors.Wrap(err, "get late writes")
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return l, errors.Newf("get late writes: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 16<<20)).Decode(&l); err != nil {
		return l, errors.Wrap(err, "decode late writes")
	}
	return l, nil
}

// ErrNotCovered is a Snapshot error for a tenant whose data the frontend cannot watch: its requests bypass the
// cache (counted, not logged as a failure).
var ErrNotCovered = errors.New("the tenant's data has sources the results cache cannot watch")

// ExternalStores is a GenerationSource for the data the frontend cannot watch: the queriers' static StoreAPI
// endpoints (sidecars in front of a Prometheus, external Thanos stores), whose data can change in any range
// without a block in the bucket or a write through an ingester. Its Snapshot fails with ErrNotCovered for the
// tenants they serve (all tenants for an endpoint not bound to one), so those tenants are never cached.
type ExternalStores struct {
	all     bool
	tenants map[string]bool
}

// NewExternalStores covers the endpoints given as query.EndpointSpec tenants: "" for an endpoint asked on behalf
// of every tenant.
func NewExternalStores(endpointTenants []string) *ExternalStores {
	s := &ExternalStores{tenants: map[string]bool{}}
	for _, t := range endpointTenants {
		if t == "" {
			s.all = true
		}
		s.tenants[t] = true
	}
	return s
}

// Name implements GenerationSource.
func (*ExternalStores) Name() string { return "external-stores" }

// Snapshot implements GenerationSource.
func (s *ExternalStores) Snapshot(_ context.Context, tenant string) (Snapshot, error) {
	if s.all || s.tenants[tenant] {
		return nil, errors.Wrapf(ErrNotCovered, "tenant %s is served by static StoreAPI endpoints", tenant)
	}
	return noChange{}, nil
}

type noChange struct{}

func (noChange) Token(DataRange) []byte           { return nil }
func (noChange) Valid(t []byte, _ DataRange) bool { return len(t) == 0 }
