-- seal.lua: first half of the opening step; closes the pre-queue and counts it.
--
-- KEYS[1] opening  HASH    state (sealed|open), sealed_ticket, sealed_at, key_commitment, ...
-- KEYS[2] queue    ZSET    user -> score
-- KEYS[3] seq      STRING  last ticket handed out
-- KEYS[4] ready    STRING  the event's state exists (see join.lua)
-- ARGV[1] sale_opens_at, unix ms
-- ARGV[2] the pre-queue tier, 2^48
-- ARGV[3] SHA-256 of the event's shuffle key (hex), recorded for the audit
--
-- Returns {0} before sale_opens_at (Redis time), {2} when already open, {-2} when the event's
-- state is missing (Redis lost it: rebuild first), or {1, sealed_ticket, prequeue_size}: the
-- pre-queue is sealed, and the controller lists it in pages (prequeue_page.lua) for
-- shuffle.lua to rescore, so no reply carries the whole pre-queue. Sealing sets state
-- "sealed", after which join.lua gives every newcomer a post-opening score and tick.lua
-- admits nobody until shuffle.lua sets "open". Running it again while sealed (a replica died
-- mid-opening) changes nothing; rescoring is deterministic, so repeating the opening changes
-- nothing either.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now < tonumber(ARGV[1]) then
  return {0}
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  return {-2}
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then
  return {2}
end
if not state then
  redis.call('HSET', KEYS[1], 'state', 'sealed', 'sealed_ticket', redis.call('GET', KEYS[3]) or '0',
    'sealed_at', now)
end
redis.call('HSETNX', KEYS[1], 'key_commitment', ARGV[3])
local size = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. ARGV[2])
return {1, tonumber(redis.call('HGET', KEYS[1], 'sealed_ticket')), size}
