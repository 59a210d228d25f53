package compact

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/efficientgo/core/errors"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"

	"github.com/stratametrics/strata/pkg/block"
)

// CleanerConfig says when the compactor deletes blocks.
type CleanerConfig struct {
	// DeletionDelay: a block marked for deletion is deleted once its mark is older than this (Thanos's and
	// Mimir's deletion delay). It must exceed the readers' ignore_deletion_mark_delay, so that no reader still
	// uses a block when it goes.
	DeletionDelay time.Duration `yaml:"deletion_delay"`
	// PartialBlockDeletionDelay: a block without meta.json and without a deletion mark whose ULID and newest
	// object are both older than this is taken for an abandoned upload and marked for deletion (then deleted by
	// the next clean). Generous, so that a slow upload under way is never touched (Mimir's
	// partial_block_deletion_delay, 1d).
	PartialBlockDeletionDelay time.Duration `yaml:"partial_block_deletion_delay"`
}

// DefaultCleanerConfig returns a deletion delay of 12h (Thanos's and Mimir's default) and a partial block delay of
// 1d (Mimir's).
func DefaultCleanerConfig() CleanerConfig {
	return CleanerConfig{DeletionDelay: 12 * time.Hour, PartialBlockDeletionDelay: 24 * time.Hour}
}

// Validate checks the delays against ignoreDeletionMarkDelay, the store-gateways' and queriers' delay before they
// drop a marked block: the deletion delay must be longer.
func (c CleanerConfig) Validate(ignoreDeletionMarkDelay time.Duration) error {
	if c.DeletionDelay <= ignoreDeletionMarkDelay {
		return errors.Newf("compactor: deletion_delay (%s) must be longer than the store-gateway's ignore_deletion_mark_delay (%s), or readers could lose blocks they still use",
			c.DeletionDelay, ignoreDeletionMarkDelay)
	}
	if c.PartialBlockDeletionDelay <= 0 {
		return errors.New("compactor: partial_block_deletion_delay must be positive")
	}
	return nil
}

// CleanResult counts what CleanTenant did.
type CleanResult struct {
	// Deleted are blocks deleted (complete or partial), of which PartialDeleted were partial.
	Deleted, PartialDeleted int
	// PartialMarked are abandoned partial blocks marked for deletion.
	PartialMarked int
	// OrphanMarkers are mirrored markers (markers/) deleted because their block is gone.
	OrphanMarkers int
	// Failed are blocks whose deletion or marking failed (logged; retried by the next clean).
	Failed int
}

// CleanTenant deletes what is due in tbkt, a tenant-scoped bucket, from its scan tb, as Thanos's and Mimir's
// blocks cleaners do:
//   - a complete block marked for deletion longer than cfg.DeletionDelay ago is deleted (block.Delete: meta.json
//     first, so a block half deleted is partial and no reader loads it; its markers last);
//   - a partial block with a deletion mark is deleted at once: no reader loads it, and this is how a deletion
//     (or the marking of an abandoned upload) interrupted by a crash is finished;
//   - a partial block without a mark whose ULID time and newest object are older than
//     cfg.PartialBlockDeletionDelay is marked for deletion (the next clean deletes it);
//   - mirrored markers under markers/ of blocks whose directory is gone are deleted.
//
// A failure on one block is logged and counted, and the others carry on; the first error is returned with the
// counts. tb is updated.
func CleanTenant(ctx context.Context, logger log.Logger, tbkt objstore.Bucket, tb *TenantBlocks, cfg CleanerConfig, now func() time.Time) (CleanResult, error) {
	var (
		res      CleanResult
		firstErr error
	)
	fail := func(id ulid.ULID, what string, err error) {
		level.Warn(logger).Log("msg", what, "block", id, "err", err)
		res.Failed++
		if firstErr == nil {
			firstErr = err
		}
	}
	t := now()

	for _, id := range sortedIDs(tb.DeletionMarks) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		_, partial := tb.Partial[id]
		_, complete := tb.Metas[id]
		if !partial && !complete {
			continue // corrupted meta.json: left alone
		}
		dm := tb.DeletionMarks[id]
		age := t.Sub(time.Unix(dm.DeletionTime, 0))
		if complete && age <= cfg.DeletionDelay {
			continue
		}
		if err := block.Delete(ctx, logger, tbkt, id); err != nil {
			fail(id, "delete block", err)
			continue
		}
		level.Info(logger).Log("msg", "deleted block", "block", id, "partial", partial, "marked_ago", age.Round(time.Second), "details", dm.Details)
		res.Deleted++
		if partial {
			res.PartialDeleted++
		}
		delete(tb.Metas, id)
		delete(tb.Partial, id)
		delete(tb.DeletionMarks, id)
		delete(tb.NoCompactMarks, id)
		delete(tb.GlobalMarkers, id)
	}

	for _, id := range sortedIDs(tb.Partial) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if _, ok := tb.DeletionMarks[id]; ok {
			continue // its deletion failed above
		}
		abandoned, err := partialAbandoned(ctx, tbkt, id, t, cfg.PartialBlockDeletionDelay)
		if err != nil {
			fail(id, "check partial block", err)
			continue
		}
		if !abandoned {
			continue
		}
		if err := block.MarkForDeletion(ctx, logger, tbkt, id, "partial block: no meta.json, abandoned upload or deletion", now); err != nil {
			fail(id, "mark partial block for deletion", err)
			continue
		}
		dm, err := block.ReadDeletionMark(ctx, tbkt, id)
		if err != nil {
			fail(id, "read back deletion mark", err)
			continue
		}
		tb.DeletionMarks[id] = dm
		tb.GlobalMarkers[id] = []string{block.DeletionMarkFilepath(id)}
		res.PartialMarked++
		level.Info(logger).Log("msg", "partial block marked for deletion", "block", id)
	}

	for _, id := range sortedIDs(tb.GlobalMarkers) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if _, ok := tb.Metas[id]; ok {
			continue
		}
		if _, ok := tb.Partial[id]; ok {
			continue
		}
		if containsID(tb.Corrupted, id) {
			continue
		}
		// The block directory was not listed. Check again: the block may have been uploaded since the scan
		// (markers are written after a block's own files, so a marker of a new block has its directory).
		exists, err := blockExists(ctx, tbkt, id)
		if err != nil {
			fail(id, "check block of orphan marker", err)
			continue
		}
		if exists {
			continue
		}
		for _, name := range tb.GlobalMarkers[id] {
			if err := tbkt.Delete(ctx, name); err != nil && !tbkt.IsObjNotFoundErr(err) {
				fail(id, "delete orphan marker", errors.Wrapf(err, "delete %s", name))
				continue
			}
			res.OrphanMarkers++
			level.Info(logger).Log("msg", "deleted marker of a deleted block", "marker", name)
		}
		delete(tb.GlobalMarkers, id)
	}
	return res, firstErr
}

// partialAbandoned says whether the partial block id is older than delay by its ULID and by the last
// modification of every one of its objects (an object whose time the bucket does not tell counts as new).
func partialAbandoned(ctx context.Context, tbkt objstore.Bucket, id ulid.ULID, now time.Time, delay time.Duration) (bool, error) {
	cutoff := now.Add(-delay)
	if ulid.Time(id.Time()).After(cutoff) {
		return false, nil
	}
	abandoned := true
	err := tbkt.Iter(ctx, id.String()+objstore.DirDelim, func(name string) error {
		if !abandoned || strings.HasSuffix(name, objstore.DirDelim) {
			return nil
		}
		attrs, err := tbkt.Attributes(ctx, name)
		if err != nil {
			if tbkt.IsObjNotFoundErr(err) {
				return nil
			}
			return errors.Wrapf(err, "attributes of %s", name)
		}
		if attrs.LastModified.IsZero() || attrs.LastModified.After(cutoff) {
			abandoned = false
		}
		return nil
	}, objstore.WithRecursiveIter())
	return abandoned, err
}

// blockExists says whether the bucket holds any object of block id.
func blockExists(ctx context.Context, tbkt objstore.Bucket, id ulid.ULID) (bool, error) {
	found := false
	err := tbkt.Iter(ctx, id.String()+objstore.DirDelim, func(string) error {
		found = true
		return errStopIter
	})
	if errors.Is(err, errStopIter) {
		err = nil
	}
	return found, err
}

var errStopIter = errors.New("stop iteration")

func containsID(ids []ulid.ULID, id ulid.ULID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func sortedIDs[V any](m map[ulid.ULID]V) []ulid.ULID {
	ids := make([]ulid.ULID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].Compare(ids[j]) < 0 })
	return ids
}
