package query

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	"github.com/oklog/ulid/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratametrics/strata/pkg/store"
	"github.com/stratametrics/strata/pkg/store/storepb"
)

// findBlocks lists the blocks of every tenant in [minT, maxT], each once; with fresh, from block lists read
// again now (the finder is a FreshBlocksFinder).
func (s *BlocksStore) findBlocks(ctx context.Context, tenants []string, minT, maxT int64, fresh bool) ([]BlockRef, error) {
	var out []BlockRef
	seen := map[ulid.ULID]bool{}
	for _, tenant := range tenants {
		var (
			refs []BlockRef
			err  error
		)
		if ff, ok := s.finder.(FreshBlocksFinder); ok && fresh {
			refs, err = ff.FreshBlocks(ctx, tenant, minT, maxT)
		} else {
			refs, err = s.finder.Blocks(ctx, tenant, minT, maxT)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, statusFromContext(ctx.Err())
			}
			return nil, status.Errorf(codes.Unavailable, "list the blocks of tenant %s: %v", tenant, err)
		}
		for _, r := range refs {
			if !seen[r.ID] {
				seen[r.ID] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// blockMatchers selects exactly the blocks ids by their ULIDs (which need no regexp escaping).
func blockMatchers(ids []string) []*storepb.LabelMatcher {
	return []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: store.BlockIDLabel, Value: strings.Join(ids, "|")}}
}

// blockState is one block's progress through a request's attempts.
type blockState struct {
	ref    BlockRef
	id     string
	owners []string
	tried  []string
}

// nextOwner is the first owner not tried for this block and not failed in this request ("" if none, or if
// maxAttempts owners were tried already).
func (b *blockState) nextOwner(failed map[string]bool, maxAttempts int) string {
	if len(b.tried) >= maxAttempts {
		return ""
	}
	for _, o := range b.owners {
		if !failed[o] && !slices.Contains(b.tried, o) {
			return o
		}
	}
	return ""
}

// gatewayCall asks the gateway at addr about the blocks ids; it returns what it answered and which of the
// blocks it confirmed having queried.
type gatewayCall[T any] func(ctx context.Context, c storepb.StoreClient, addr string, ids []string) (T, []string, error)

// distribution is what a request's attempts came to.
type distribution[T any] struct {
	answers  []gatewayAnswer[T] // of the gateways that answered, in the order of the attempts
	missing  []*blockState      // blocks no gateway confirmed
	tried    []string           // every gateway asked, sorted
	failures []string           // "addr: error" of the gateways that failed, and owner look-up errors

	failed map[string]bool // gateways that failed in this request: not asked again
	asked  map[string]bool
}

func newDistribution[T any]() *distribution[T] {
	return &distribution[T]{failed: map[string]bool{}, asked: map[string]bool{}}
}

type gatewayAnswer[T any] struct {
	addr string
	val  T
}

// unqueriedError is the error of blocks left over: codes.Unavailable naming how many, a few of them, the
// gateways tried and a few of their failures.
func (d *distribution[T]) unqueriedError() error {
	if len(d.missing) == 0 {
		return nil
	}
	const show = 5
	ids := make([]string, 0, min(show, len(d.missing)))
	for _, b := range d.missing[:min(show, len(d.missing))] {
		ids = append(ids, b.id)
	}
	more := ""
	if len(d.missing) > show {
		more = fmt.Sprintf(" and %d more", len(d.missing)-show)
	}
	tried := "none"
	if len(d.tried) > 0 {
		tried = strings.Join(d.tried, ", ")
	}
	msg := fmt.Sprintf("%d blocks could not be queried on any of their store-gateways (%s%s); gateways tried: %s", len(d.missing), strings.Join(ids, ", "), more, tried)
	if len(d.failures) > 0 {
		msg += "; failures: " + strings.Join(d.failures[:min(3, len(d.failures))], "; ")
	}
	return status.Error(codes.Unavailable, msg)
}

// queryBlocks runs one request over the blocks of tenants in [minT, maxT] (nil: there are none): each block
// goes to its owners, one after the other, until one confirms having queried it. Then the consistency check
// (Mimir's): when blocks are left that no owner confirmed, the block lists are read again at once and the
// request re-planned: blocks gone from them (deleted, without meta.json, marked for deletion longer ago than the
// delay; the store-gateways may drop such a block before this querier's list does) are no longer required,
// blocks new in them are queried, and only blocks still expected and queried nowhere stay missing. The error is
// the caller's context's, or the finder's.
func queryBlocks[T any](ctx context.Context, s *BlocksStore, method string, tenants []string, minT, maxT int64, call gatewayCall[T]) (*distribution[T], error) {
	refs, err := s.findBlocks(ctx, tenants, minT, maxT, false)
	if err != nil || len(refs) == 0 {
		return nil, err
	}
	s.metrics.checks.Inc()
	d := newDistribution[T]()
	var pending []*blockState
	for _, r := range refs {
		if b := lookupOwners(s, d, &blockState{ref: r, id: r.ID.String()}); b != nil {
			pending = append(pending, b)
		}
	}
	if err := distribute(ctx, s, method, pending, d, call); err != nil {
		return nil, err
	}
	if len(d.missing) > 0 {
		if err := replan(ctx, s, method, tenants, minT, maxT, refs, d, call); err != nil {
			return nil, err
		}
	}
	for addr := range d.asked {
		d.tried = append(d.tried, addr)
	}
	sort.Strings(d.tried)
	if len(d.missing) > 0 {
		s.metrics.checksFailed.Inc()
		s.metrics.unqueried.Add(float64(len(d.missing)))
		level.Warn(s.logger).Log("msg", "blocks could not be queried on the store-gateways", "method", method, "blocks", len(d.missing), "gateways", strings.Join(d.tried, ","))
	}
	return d, nil
}

// lookupOwners sets b's owners and returns it; when they cannot be looked up, b is missing and nil returned.
func lookupOwners[T any](s *BlocksStore, d *distribution[T], b *blockState) *blockState {
	owners, err := s.owners(b.ref.ID)
	if err != nil {
		d.failures = append(d.failures, fmt.Sprintf("owners of block %s: %v", b.id, err))
		d.missing = append(d.missing, b)
		return nil
	}
	b.owners = owners
	return b
}

// replan reads the block lists again (when the finder can) and queries what they now expect and was not
// queried: the missing blocks still listed (on owners not tried yet) and the blocks new in the lists. Missing
// blocks no longer listed are dropped from d.missing.
func replan[T any](ctx context.Context, s *BlocksStore, method string, tenants []string, minT, maxT int64, planned []BlockRef, d *distribution[T], call gatewayCall[T]) error {
	if _, ok := s.finder.(FreshBlocksFinder); !ok {
		return nil
	}
	s.metrics.replans.Inc()
	fresh, err := s.findBlocks(ctx, tenants, minT, maxT, true)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		d.failures = append(d.failures, fmt.Sprintf("read the block list again: %v", err))
		return nil // the missing blocks stay missing
	}
	expected := make(map[ulid.ULID]bool, len(fresh))
	for _, r := range fresh {
		expected[r.ID] = true
	}
	missing := d.missing
	d.missing = nil
	var (
		pending []*blockState
		gone    []string
	)
	for _, b := range missing {
		if !expected[b.ref.ID] {
			gone = append(gone, b.id)
			continue
		}
		if len(b.owners) == 0 {
			if b = lookupOwners(s, d, b); b == nil {
				continue
			}
		}
		pending = append(pending, b)
	}
	known := make(map[ulid.ULID]bool, len(planned))
	for _, r := range planned {
		known[r.ID] = true
	}
	added := 0
	for _, r := range fresh {
		if !known[r.ID] {
			added++
			if b := lookupOwners(s, d, &blockState{ref: r, id: r.ID.String()}); b != nil {
				pending = append(pending, b)
			}
		}
	}
	s.metrics.gone.Add(float64(len(gone)))
	level.Debug(s.logger).Log("msg", "blocks queried nowhere: block list read again", "method", method, "missing", len(missing), "gone", len(gone), "new", added, "gone_blocks", strings.Join(gone, ","))
	return distribute(ctx, s, method, pending, d, call)
}

// distribute runs the attempts of one request over pending blocks: each not yet queried block goes to its next
// owner, one call per gateway per attempt, the gateways of an attempt in parallel; what is left goes to
// d.missing. The error is the caller's context's, only.
func distribute[T any](ctx context.Context, s *BlocksStore, method string, pending []*blockState, d *distribution[T], call gatewayCall[T]) error {
	var sem chan struct{}
	if s.cfg.MaxConcurrency > 0 {
		sem = make(chan struct{}, s.cfg.MaxConcurrency)
	}
	for attempt := 0; attempt < s.cfg.MaxAttempts && len(pending) > 0; attempt++ {
		if err := ctx.Err(); err != nil {
			return statusFromContext(err)
		}
		groups := map[string][]*blockState{}
		var addrs []string
		for _, b := range pending {
			addr := b.nextOwner(d.failed, s.cfg.MaxAttempts)
			if addr == "" {
				d.missing = append(d.missing, b) // no owner left to ask
				continue
			}
			if len(b.tried) > 0 {
				s.metrics.retried.Inc()
			}
			b.tried = append(b.tried, addr)
			if _, ok := groups[addr]; !ok {
				addrs = append(addrs, addr)
			}
			groups[addr] = append(groups[addr], b)
			d.asked[addr] = true
		}
		pending = pending[:0:0]
		if len(addrs) == 0 {
			break
		}

		type result struct {
			val     T
			queried []string
			err     error
		}
		results := make([]result, len(addrs))
		var wg sync.WaitGroup
		for i, addr := range addrs {
			ids := make([]string, 0, len(groups[addr]))
			for _, b := range groups[addr] {
				ids = append(ids, b.id)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if sem != nil {
					select {
					case sem <- struct{}{}:
						defer func() { <-sem }()
					case <-ctx.Done():
						results[i].err = ctx.Err()
						return
					}
				}
				c, err := s.client(addr)
				if err != nil {
					results[i].err = err
					return
				}
				gctx, cancel := context.WithCancel(ctx)
				defer cancel()
				results[i].val, results[i].queried, results[i].err = call(gctx, c, addr, ids)
			}()
		}
		wg.Wait()
		err := ctx.Err()
		for i := range results {
			if err == nil && callerDeadline(ctx, results[i].err) {
				err = context.DeadlineExceeded
			}
		}
		if err != nil {
			for range addrs {
				s.metrics.requests.WithLabelValues(gatewayCanceled).Inc()
			}
			return statusFromContext(err)
		}

		for i, addr := range addrs {
			res := results[i]
			if res.err != nil {
				s.metrics.requests.WithLabelValues(gatewayError).Inc()
				level.Debug(s.logger).Log("msg", "store-gateway failed; its blocks go to their next owners", "method", method, "gateway", addr, "blocks", len(groups[addr]), "err", res.err)
				d.failed[addr] = true
				d.failures = append(d.failures, fmt.Sprintf("%s: %v", addr, res.err))
				pending = append(pending, groups[addr]...)
				continue
			}
			confirmed := make(map[string]bool, len(res.queried))
			for _, id := range res.queried {
				confirmed[id] = true
			}
			outcome := gatewaySuccess
			for _, b := range groups[addr] {
				if confirmed[b.id] {
					s.metrics.queried.Inc()
					continue
				}
				outcome = gatewayIncomplete
				pending = append(pending, b)
			}
			if outcome == gatewayIncomplete {
				level.Debug(s.logger).Log("msg", "store-gateway did not confirm some blocks; they go to their next owners", "method", method, "gateway", addr, "blocks", len(groups[addr]), "confirmed", len(res.queried))
			}
			s.metrics.requests.WithLabelValues(outcome).Inc()
			d.answers = append(d.answers, gatewayAnswer[T]{addr: addr, val: res.val})
		}
	}
	d.missing = append(d.missing, pending...)
	return nil
}

// callerDeadline reports whether a gateway's error is the caller's deadline: gRPC passes the deadline on, so
// the gateway's side may reach it, and answer DeadlineExceeded, a moment before the caller's context does.
func callerDeadline(ctx context.Context, err error) bool {
	if status.Code(err) != codes.DeadlineExceeded {
		return false
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < 100*time.Millisecond
}
