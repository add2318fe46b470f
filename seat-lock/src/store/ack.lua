-- ack.lua: removes published facts from an event's outbox. Removing each fact by value (not
-- trimming by count) stays correct when two replicas publish the same entries at once.
-- KEYS[1]: the outbox list "<prefix>sl:{<event_id>}:outbox".  ARGV: the published entries.
-- Returns the number of entries removed.
local removed = 0
for _, entry in ipairs(ARGV) do
  removed = removed + redis.call('LREM', KEYS[1], 1, entry)
end
return removed
