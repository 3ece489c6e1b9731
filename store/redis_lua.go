package store

import "github.com/redis/go-redis/v9"

// Lua scripts of the Redis backend. Each runs atomically in Redis, so one
// script is one check-and-set however many gates share the server. Scripts
// answer a status string first ("ok", "notfound", "revoked", ...) and never
// raise errors for expected outcomes; a record whose JSON does not decode
// answers "tampered".
//
// Scripts read a session's immutable fields (jkt, principal, epochs,
// budget ceilings) from its MAC'd JSON without verifying the MAC (Redis has
// no key); Go verifies the MAC of the record the script returns before it
// reports success. A tampered record therefore never passes, at worst it
// leaves a counter or replay entry behind.
//
// The principal epoch key in scripts that start from a session id is
// derived inside the script from the session's principal, so these
// scripts are not Redis Cluster safe (standalone and Sentinel are).

type redisScripts struct {
	auth, getSession, createSession, renew          *redis.Script
	revokeSession, revokePrincipal, revokeAll       *redis.Script
	grant, refund, idemBegin, cas, casDel, approval *redis.Script
}

func newRedisScripts() *redisScripts {
	return &redisScripts{
		auth:            redis.NewScript(luaAuth),
		getSession:      redis.NewScript(luaGetSession),
		createSession:   redis.NewScript(luaCreateSession),
		renew:           redis.NewScript(luaRenew),
		revokeSession:   redis.NewScript(luaRevokeSession),
		revokePrincipal: redis.NewScript(luaRevokePrincipal),
		revokeAll:       redis.NewScript(luaRevokeAll),
		grant:           redis.NewScript(luaGrant),
		refund:          redis.NewScript(luaRefund),
		idemBegin:       redis.NewScript(luaIdemBegin),
		cas:             redis.NewScript(luaCAS),
		casDel:          redis.NewScript(luaCASDel),
		approval:        redis.NewScript(luaCreateApproval),
	}
}

// luaSessionHead loads KEYS[1] into s and r and checks revocation.
// ARGV[1] of the caller is unused here; epochKeyPrefix names the principal
// epoch key prefix and globalKey the global epoch key.
const luaSessionHead = `
local function load_session(key)
  local s = redis.call('HMGET', key, 'rec', 'mac', 'calls', 'cost', 'revoked')
  if not s[1] then return nil, nil, 'notfound' end
  local ok, r = pcall(cjson.decode, s[1])
  if not ok or type(r) ~= 'table' or type(r.principal) ~= 'string' then return nil, nil, 'tampered' end
  return s, r, nil
end
local function epochs(gkey, pkey)
  return tonumber(redis.call('GET', gkey) or '0'), tonumber(redis.call('GET', pkey) or '0')
end
local function is_revoked(s, r, ge, pe)
  return s[5] == '1' or (tonumber(r.principal_epoch) or -1) < pe or (tonumber(r.global_epoch) or -1) < ge
end
`

// KEYS: session, global epoch, replay. ARGV: jkt, replay TTL ms (from
// the gate's clock: PXAT would read Redis's), principal epoch key prefix.
const luaAuth = luaSessionHead + `
local s, r, e = load_session(KEYS[1])
if e then return {e} end
if r.jkt ~= ARGV[1] then return {'notfound'} end
local ge, pe = epochs(KEYS[2], ARGV[3] .. r.principal)
if is_revoked(s, r, ge, pe) then return {'revoked'} end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return {'replay'} end
return {'ok', s[1], s[2], s[3] or '0', s[4] or '0'}
`

// KEYS: session, global epoch. ARGV: principal epoch key prefix.
const luaGetSession = luaSessionHead + `
local s, r, e = load_session(KEYS[1])
if e then return {e} end
local ge, pe = epochs(KEYS[2], ARGV[1] .. r.principal)
local rev = '0'
if is_revoked(s, r, ge, pe) then rev = '1' end
return {'ok', s[1], s[2], s[3] or '0', s[4] or '0', rev}
`

// KEYS: session, global epoch, principal epoch, live:p, live:all,
// principals. ARGV: principal, now ms, max live, ttl ms, lease ms, id,
// expected global epoch, expected principal epoch, rec, mac.
const luaCreateSession = `
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local ge = tonumber(redis.call('GET', KEYS[2]) or '0')
local pe = tonumber(redis.call('GET', KEYS[3]) or '0')
if ge ~= tonumber(ARGV[7]) or pe ~= tonumber(ARGV[8]) then return {'retry', tostring(ge), tostring(pe)} end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[2])
local maxl = tonumber(ARGV[3])
if maxl > 0 and redis.call('ZCARD', KEYS[4]) >= maxl then return {'limit'} end
redis.call('HSET', KEYS[1], 'rec', ARGV[9], 'mac', ARGV[10], 'calls', 0, 'cost', 0, 'revoked', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[6])
redis.call('SADD', KEYS[6], ARGV[1])
return {'ok'}
`

// KEYS: session, global epoch, principal epoch, live:p, live:all.
// ARGV: old rec, new rec, new mac, lease ms, id.
const luaRenew = luaSessionHead + `
local s, r, e = load_session(KEYS[1])
if e then return {e} end
if s[1] ~= ARGV[1] then return {'retry'} end
local ge, pe = epochs(KEYS[2], KEYS[3])
if is_revoked(s, r, ge, pe) then return {'revoked'} end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'mac', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
return {'ok', s[3] or '0', s[4] or '0'}
`

// KEYS: session, live:all. ARGV: now ms, id, live:p prefix.
// Revoked sessions leave the live sets, so a set holds only unrevoked ones.
const luaRevokeSession = `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = 0
local sc = redis.call('ZSCORE', KEYS[2], ARGV[2])
if sc and tonumber(sc) > tonumber(ARGV[1]) and redis.call('HGET', KEYS[1], 'revoked') ~= '1' then n = 1 end
redis.call('HSET', KEYS[1], 'revoked', 1)
redis.call('ZREM', KEYS[2], ARGV[2])
local ok, r = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'rec'))
if ok and type(r) == 'table' and type(r.principal) == 'string' then
  redis.call('ZREM', ARGV[3] .. r.principal, ARGV[2])
end
return n
`

// KEYS: principal epoch, live:p, live:all. ARGV: now ms.
const luaRevokePrincipal = `
redis.call('INCR', KEYS[1])
local n = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
for i = 1, #ids, 500 do
  redis.call('ZREM', KEYS[3], unpack(ids, i, math.min(i + 499, #ids)))
end
redis.call('DEL', KEYS[2])
return n
`

// KEYS: global epoch, live:all, principals. ARGV: now ms, live:p prefix.
const luaRevokeAll = `
redis.call('INCR', KEYS[1])
local n = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
for _, p in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('DEL', ARGV[2] .. p)
end
redis.call('DEL', KEYS[2], KEYS[3])
return n
`

// KEYS: session, global epoch, principal epoch, hour bucket, day bucket,
// grant marker. ARGV: principal, calls, cost, max calls/hour, max
// cost/day, grant ttl ms, hour ttl ms, day ttl ms.
const luaGrant = luaSessionHead + `
local s, r, e = load_session(KEYS[1])
if e then return {e} end
if r.principal ~= ARGV[1] then return {'notfound'} end
local ge, pe = epochs(KEYS[2], KEYS[3])
if is_revoked(s, r, ge, pe) then return {'revoked'} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {'consumed'} end
local c, k = tonumber(ARGV[2]), tonumber(ARGV[3])
local calls, cost = tonumber(s[3] or '0'), tonumber(s[4] or '0')
if type(r.max_calls) == 'number' and calls + c > r.max_calls then return {'budget', 'session calls'} end
if type(r.max_cost_usd_cents) == 'number' and cost + k > r.max_cost_usd_cents then return {'budget', 'session cost'} end
local maxh, maxd = tonumber(ARGV[4]), tonumber(ARGV[5])
if maxh > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') + c > maxh then return {'budget', 'principal calls per hour'} end
if maxd > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') + k > maxd then return {'budget', 'principal cost per day'} end
calls = redis.call('HINCRBY', KEYS[1], 'calls', ARGV[2])
cost = redis.call('HINCRBY', KEYS[1], 'cost', ARGV[3])
redis.call('INCRBY', KEYS[4], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[7])
redis.call('INCRBY', KEYS[5], ARGV[3])
redis.call('PEXPIRE', KEYS[5], ARGV[8])
redis.call('SET', KEYS[6], '1', 'PX', ARGV[6])
return {'ok', s[1], s[2], tostring(calls), tostring(cost)}
`

// KEYS: session, hour bucket, day bucket. ARGV: calls, cost.
const luaRefund = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HINCRBY', KEYS[1], 'calls', 0 - tonumber(ARGV[1])) < 0 then redis.call('HSET', KEYS[1], 'calls', 0) end
  if redis.call('HINCRBY', KEYS[1], 'cost', 0 - tonumber(ARGV[2])) < 0 then redis.call('HSET', KEYS[1], 'cost', 0) end
end
for i = 2, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('DECRBY', KEYS[i], ARGV[i - 1]) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 1
`

// KEYS: idem record. ARGV: rec, mac, ttl ms.
const luaIdemBegin = `
local s = redis.call('HMGET', KEYS[1], 'rec', 'mac')
if s[1] then return {'exists', s[1], s[2] or ''} end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'mac', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'ok'}
`

// Compare-and-set of a MAC'd record. KEYS: record, then any zsets.
// ARGV: old rec, new rec, new mac, pexpire ms (0 keeps the TTL), member to
// remove from every zset (” for none).
const luaCAS = `
if redis.call('HGET', KEYS[1], 'rec') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'mac', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
if ARGV[5] ~= '' then
  for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[5]) end
end
return 1
`

// KEYS: record. ARGV: old rec.
const luaCASDel = `
if redis.call('HGET', KEYS[1], 'rec') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`

// KEYS: approval, pending zset of the session, dedupe key, index,
// pending index. ARGV: rec, mac, now ms, expires ms, max pending, created
// ms, record ttl ms, id, approval key prefix.
const luaCreateApproval = `
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local ex = redis.call('GET', KEYS[3])
if ex and redis.call('ZSCORE', KEYS[2], ex) then
  local r = redis.call('HMGET', ARGV[9] .. ex, 'rec', 'mac')
  if r[1] then return {'dup', r[1], r[2] or '', ex} end
end
local maxp = tonumber(ARGV[5])
if maxp > 0 and redis.call('ZCARD', KEYS[2]) >= maxp then return {'toomany'} end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'mac', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[8])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[7]) then redis.call('PEXPIRE', KEYS[2], ARGV[7]) end
local ttl = tonumber(ARGV[4]) - tonumber(ARGV[3])
if ttl > 0 then redis.call('SET', KEYS[3], ARGV[8], 'PX', ttl) end
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[8])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[8])
return {'ok'}
`
