-- outbox_take.lua: hands a relay the outbox entries to publish as Admitted events.
--
-- KEYS[1] outbox  STREAM  one entry per admitting tick: user -> "pass_id:expires_at_ms:ticket";
--                         one per ended pass: user -> "end:<left|bought>:pass_id:expires_at_ms"
-- ARGV[1] the relay's consumer name (the replica id) in the group "relay"
-- ARGV[2] min idle, ms: an entry another relay took this long ago and did not finish (it died,
--         or NATS refused) is taken over
-- ARGV[3] the most entries to return
--
-- Returns {id_1, {user, "pass_id:expires_at_ms:ticket", ...}, id_2, {...}, ...}: first the
-- stalled entries, else new ones; {} when there is nothing to do. An entry stays pending (and
-- is taken over after the min idle) until outbox_done.lua acknowledges and deletes it.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local entries = redis.call('XAUTOCLAIM', KEYS[1], 'relay', ARGV[1], ARGV[2], '0-0', 'COUNT', ARGV[3])[2]
if #entries == 0 then
  local read = redis.call('XREADGROUP', 'GROUP', 'relay', ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
  if not read then
    return {}
  end
  entries = read[1][2]
end
local result = {}
for _, entry in ipairs(entries) do
  table.insert(result, entry[1])
  table.insert(result, entry[2])
end
return result
