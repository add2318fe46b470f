-- outbox_done.lua: drops outbox entries whose Admitted events are published.
--
-- KEYS[1] outbox  STREAM  see tick.lua
-- ARGV    the entry ids
--
-- Returns the entries left in the outbox. An empty outbox is deleted, group and all, so a
-- finished sale leaves no key behind: entries a relay has taken but not finished still count
-- in XLEN, and the next admitting tick recreates the stream and its group. Repeating it is
-- harmless.
redis.call('XACK', KEYS[1], 'relay', unpack(ARGV))
redis.call('XDEL', KEYS[1], unpack(ARGV))
local left = redis.call('XLEN', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[1])
end
return left
