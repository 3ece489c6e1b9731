package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Standing approvals and learned domains in Redis: each is a MAC'd record
// {rec, mac} (kinds "standing" and "learned"), like approvals, so a
// Redis writer cannot mint a pre-approval or an egress entry. Indexes
// (sorted sets by creation time, a set per (principal, action)) carry no
// authority: an index entry without a valid record is skipped and pruned.

func (r *Redis) standingKey(id string) string { return r.key("sa", id) }
func (r *Redis) standingIndexKey() string     { return r.key("saidx") }
func (r *Redis) learnedKey(id string) string  { return r.key("ld", id) }
func (r *Redis) learnedIndexKey() string      { return r.key("ldidx") }
func (r *Redis) learnedPairKey(p, a string) string {
	return r.key("ldp", hashKey(p, a))
}
func (r *Redis) learnedDedupeKey(p, a, h string) string {
	return r.key("ldk", hashKey(p, a, h))
}

// openRecord verifies and decodes a MAC'd record of kind whose id is id.
func openRecord[T any](r *Redis, kind, id string, rc record, idOf func(*T) string) (*T, error) {
	var v T
	if !verifyMAC(r.cfg.MACKey, kind, id, []byte(rc.rec), rc.mac) || json.Unmarshal([]byte(rc.rec), &v) != nil || idOf(&v) != id {
		return nil, r.tampered(kind, id)
	}
	return &v, nil
}

// listRecords reads every record named in the index (newest first),
// verifying each; vanished entries are pruned, tampered ones skipped.
func listRecords[T any](ctx context.Context, r *Redis, index string, keyOf func(string) string, kind string, idOf func(*T) string) ([]*T, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	ids, err := r.client.ZRangeArgs(ctx, redis.ZRangeArgs{Key: index, Start: 0, Stop: -1, Rev: true}).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out, _, err := readRecords(ctx, r, ids, index, keyOf, kind, idOf)
	return out, err
}

// readRecords reads and verifies the records named ids (in that order),
// leaving out tampered ones, and prunes the index entries of vanished
// ones; it returns how many it pruned.
func readRecords[T any](ctx context.Context, r *Redis, ids []string, index string, keyOf func(string) string, kind string, idOf func(*T) string) ([]*T, int, error) {
	if len(ids) == 0 {
		return nil, 0, nil
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, keyOf(id), "rec", "mac")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, unavailable(err)
	}
	var out []*T
	var gone []any
	for i, c := range cmds {
		vals := c.Val()
		rec, _ := vals[0].(string)
		mac, _ := vals[1].(string)
		if rec == "" {
			gone = append(gone, ids[i])
			continue
		}
		if v, err := openRecord(r, kind, ids[i], record{rec, mac}, idOf); err == nil {
			out = append(out, v)
		}
	}
	if len(gone) > 0 {
		if err := r.client.ZRem(ctx, index, gone...).Err(); err != nil {
			return nil, 0, unavailable(err)
		}
	}
	return out, len(gone), nil
}

func standingID(s *Standing) string     { return s.ID }
func learnedID(d *LearnedDomain) string { return d.ID }
func (r *Redis) standingTTL(s *Standing, now time.Time) time.Duration {
	if s.ExpiresAt.IsZero() {
		return 0
	}
	return max(s.ExpiresAt.Sub(now), time.Millisecond)
}

// CreateStanding implements Store.
func (r *Redis) CreateStanding(ctx context.Context, s *Standing) error {
	if err := checkStanding(s); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	key := r.standingKey(s.ID)
	ok, err := r.client.HSetNX(ctx, key, "rec", string(b)).Result()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return fmt.Errorf("%w: standing approval id exists", ErrConflict)
	}
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "mac", recordMAC(r.cfg.MACKey, "standing", s.ID, b))
		if ttl := r.standingTTL(s, r.clock.Now()); ttl > 0 {
			p.PExpire(ctx, key, ttl)
		}
		p.ZAdd(ctx, r.standingIndexKey(), redis.Z{Score: float64(s.CreatedAt.UnixMilli()), Member: s.ID})
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// ListStanding implements Store.
func (r *Redis) ListStanding(ctx context.Context, now time.Time) ([]*Standing, error) {
	all, err := listRecords(ctx, r, r.standingIndexKey(), r.standingKey, "standing", standingID)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, s := range all {
		if s.Live(now) {
			out = append(out, s)
		}
	}
	sortStanding(out)
	return out, nil
}

// DeleteStanding implements Store.
func (r *Redis) DeleteStanding(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	n, err := r.client.Del(ctx, r.standingKey(id)).Result()
	if err != nil {
		return unavailable(err)
	}
	if err := r.client.ZRem(ctx, r.standingIndexKey(), id).Err(); err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// FindStanding implements Store.
func (r *Redis) FindStanding(ctx context.Context, principal, actionID string, now time.Time) (*Standing, error) {
	all, err := r.ListStanding(ctx, now)
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if s.Principal == principal && s.ActionID == actionID {
			return s, nil
		}
	}
	return nil, ErrNotFound
}

// UseStanding implements Store: verify, count the use, compare-and-set.
func (r *Redis) UseStanding(ctx context.Context, id string, now time.Time) (*Standing, error) {
	key := r.standingKey(id)
	for range 16 {
		rc, err := r.getRecord(ctx, key)
		if err != nil {
			return nil, err
		}
		s, err := openRecord(r, "standing", id, rc, standingID)
		if err != nil {
			return nil, err
		}
		n, err := useStandingNext(s, now)
		if err != nil {
			return nil, err
		}
		ok, err := r.casRecord(ctx, key, "standing", id, rc.rec, n, 0, "")
		if err != nil {
			return nil, err
		}
		if ok {
			return n, nil
		}
	}
	return nil, ErrConflict
}

// PutLearned implements Store.
func (r *Redis) PutLearned(ctx context.Context, d *LearnedDomain) (*LearnedDomain, error) {
	if err := checkLearned(d); err != nil {
		return nil, err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	n := cloneLearned(d)
	dk := r.learnedDedupeKey(d.Principal, d.ActionID, d.Host)
	ex, err := r.client.Get(ctx, dk).Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return nil, unavailable(err)
	default:
		n.ID = ex
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, err
	}
	ttl := max(n.ExpiresAt.Sub(r.clock.Now()), time.Millisecond)
	key := r.learnedKey(n.ID)
	pair := r.learnedPairKey(n.Principal, n.ActionID)
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "rec", string(b), "mac", recordMAC(r.cfg.MACKey, "learned", n.ID, b))
		p.PExpire(ctx, key, ttl)
		p.Set(ctx, dk, n.ID, ttl)
		p.ZAdd(ctx, r.learnedIndexKey(), redis.Z{Score: float64(n.CreatedAt.UnixMilli()), Member: n.ID})
		p.ZAdd(ctx, pair, redis.Z{Score: float64(n.CreatedAt.UnixMilli()), Member: n.ID})
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	return n, nil
}

func (r *Redis) learnedLive(all []*LearnedDomain, now time.Time) []*LearnedDomain {
	out := all[:0]
	for _, d := range all {
		if now.Before(d.ExpiresAt) {
			out = append(out, d)
		}
	}
	sortLearned(out)
	return out
}

// ListLearned implements Store.
func (r *Redis) ListLearned(ctx context.Context, now time.Time) ([]*LearnedDomain, error) {
	all, err := listRecords(ctx, r, r.learnedIndexKey(), r.learnedKey, "learned", learnedID)
	if err != nil {
		return nil, err
	}
	return r.learnedLive(all, now), nil
}

// LearnedFor implements Store.
func (r *Redis) LearnedFor(ctx context.Context, principal, actionID string, now time.Time) ([]*LearnedDomain, error) {
	all, err := listRecords(ctx, r, r.learnedPairKey(principal, actionID), r.learnedKey, "learned", learnedID)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, d := range all {
		if d.Principal == principal && d.ActionID == actionID {
			out = append(out, d)
		}
	}
	return r.learnedLive(out, now), nil
}

// DeleteLearned implements Store.
func (r *Redis) DeleteLearned(ctx context.Context, id string) error {
	rc, err := r.getRecord(ctx, r.learnedKey(id))
	if err != nil {
		return err
	}
	d, err := openRecord(r, "learned", id, rc, learnedID)
	if err != nil {
		return err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.learnedKey(id), r.learnedDedupeKey(d.Principal, d.ActionID, d.Host))
		p.ZRem(ctx, r.learnedIndexKey(), id)
		p.ZRem(ctx, r.learnedPairKey(d.Principal, d.ActionID), id)
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	return nil
}
