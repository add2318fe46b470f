-- finished.lua: whether an event's waiting room is empty, so the controllers may stop walking it.
--
-- KEYS[1] queue    ZSET    user -> score
-- KEYS[2] passes   ZSET    user -> pass expiry
-- KEYS[3] outbox   STREAM  unpublished Admitted / PassEnded events
--
-- Returns 1 when nobody waits, nobody holds a pass and no event is left to publish, else 0.
-- The set of events (<p>adm:events) has no hash tag of its own, so removing the event from it
-- is a separate command ([`Store::forget_event`] checks again after removing it).
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[2]) > 0
  or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
return 1
