-- release.lua: the owner gives a held hold back.
-- KEYS[1]: the event's key base.  ARGV: hold_id, user_id.
-- Returns {'NOT_READY'}, {'NOT_FOUND'}, {'NOT_OWNER'}, {'IN_CHECKOUT'}, {'SOLD'}, or the hold
-- reply {'OK', ...} (state released, or as it was when it had already ended: idempotent).
if not ready() then return {'NOT_READY'} end
local hold_id, user = ARGV[1], ARGV[2]
local refusal = check_owner(hold_id, user)
if refusal then return refusal end
local state = settle(hold_id, now_ms())
if state == 'checkout' then return {'IN_CHECKOUT'} end
if state == 'sold' then return {'SOLD'} end
if state == 'held' then end_hold(hold_id, 'released', 'RELEASED') end
return hold_reply(hold_id)
