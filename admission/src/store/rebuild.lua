-- rebuild.lua: restores an event's state after Redis lost it, from the event's durable
-- history (the controller reads it from the JetStream stream), then sets the ready marker.
--
-- KEYS[1] rebuild   STRING  the rebuild lock: the token of the replica rebuilding
-- KEYS[2] ready     STRING  the marker; set (to the new epoch, Redis ms) by the last call
-- KEYS[3] opening   HASH    state, sealed_ticket, sealed_at, opened_at, prequeue, key_commitment
-- KEYS[4] passes    ZSET    user -> pass expiry (unix ms)
-- KEYS[5] admitted  HASH    user -> "pass_id:expires_at_ms:ticket:checked_in_expiry_ms"
-- KEYS[6] passseq   STRING  last pass id handed out
-- KEYS[7] seq       STRING  last ticket handed out
-- ARGV[1] the lock token of this rebuild
-- ARGV[2] 1 on the last call (sets the marker and releases the lock), 0 before
-- ARGV[3] the highest pass id in the history
-- ARGV[4] the highest ticket in the history
-- ARGV[5] SHA-256 of the event's shuffle key (hex), for the audit record
-- ARGV[6], ... groups of 4: user, pass_id, expires_at_ms (the latest expiry any token of the
--         pass may carry), ticket: the passes still live per the history
--
-- Returns -1 when this replica no longer holds the lock (it expired: another may rebuild),
-- 0 when the event was ready already (nothing changed), else 1 (the new epoch on the last
-- call). A pass that expired meanwhile, or a user who holds a pass again already, is skipped.
-- The counters restart above anything issued: passseq above the history's highest pass id
-- and above Redis time in ms (pass ids issued before the history's window are older than
-- its passes; the time floor covers a history without any), seq above the highest ticket.
-- The event is marked open (its sale has opened: that is when a rebuild is needed) with
-- `rebuilt_at`; a record that survived is kept.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1])
  return 0
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 6, #ARGV - 3, 4 do
  local user, pass_id, expires, ticket = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if tonumber(expires) > now and not redis.call('ZSCORE', KEYS[4], user) then
    redis.call('ZADD', KEYS[4], expires, user)
    redis.call('HSET', KEYS[5], user, pass_id .. ':' .. expires .. ':' .. ticket .. ':' .. expires)
  end
end
if ARGV[2] ~= '1' then
  return 1
end
local passseq = math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), tonumber(ARGV[3]), now)
redis.call('SET', KEYS[6], string.format('%d', passseq))
local seq = math.max(tonumber(redis.call('GET', KEYS[7]) or '0'), tonumber(ARGV[4]))
redis.call('SET', KEYS[7], string.format('%d', seq))
if not redis.call('HGET', KEYS[3], 'state') then
  redis.call('HSET', KEYS[3], 'state', 'open', 'sealed_ticket', string.format('%d', seq), 'sealed_at', now,
    'opened_at', now, 'prequeue', 0)
end
redis.call('HSET', KEYS[3], 'rebuilt_at', now)
redis.call('HSETNX', KEYS[3], 'key_commitment', ARGV[5])
redis.call('SET', KEYS[2], string.format('%d', now))
redis.call('DEL', KEYS[1])
return now
