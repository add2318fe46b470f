-- get_hold.lua: the hold as it stands, for its owner; ends it first if it has expired.
-- KEYS[1]: the event's key base.  ARGV: hold_id, user_id.
-- Returns {'NOT_READY'}, {'NOT_FOUND'}, {'NOT_OWNER'} or the hold reply {'OK', ...}.
if not ready() then return {'NOT_READY'} end
local hold_id, user = ARGV[1], ARGV[2]
local refusal = check_owner(hold_id, user)
if refusal then return refusal end
settle(hold_id, now_ms())
return hold_reply(hold_id)
