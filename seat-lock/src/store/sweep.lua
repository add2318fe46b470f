-- sweep.lua: ends the event's expired holds (the sweeper calls it for every known event).
-- KEYS[1]: the event's key base.  ARGV: the most holds to end in this call.
-- Returns the number of holds it ended (0 when the event is not initialised).
if not ready() then return 0 end
return sweep(now_ms(), tonumber(ARGV[1]))
