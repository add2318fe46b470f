-- outbox_done.lua: drops outbox entries whose Admitted events are published.
--
-- KEYS[1] outbox  STREAM  see tick.lua
-- ARGV    the entry ids
--
-- Returns the entries left in the outbox. Repeating it is harmless.
redis.call('XACK', KEYS[1], 'relay', unpack(ARGV))
redis.call('XDEL', KEYS[1], unpack(ARGV))
return redis.call('XLEN', KEYS[1])
