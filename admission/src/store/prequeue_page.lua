-- prequeue_page.lua: one page of a sealed pre-queue, for shuffle.lua to rescore.
--
-- KEYS[1] queue  ZSET  user -> score
-- ARGV[1] the ZSCAN cursor ("0" to start)
-- ARGV[2] users to look at in this page (a ZSCAN COUNT hint)
-- ARGV[3] the pre-queue tier, 2^48: scores below it are pre-queue scores
--
-- Returns {next_cursor, {user, ...}}: the users of the page whose score is still a pre-queue
-- score; next_cursor "0" when the scan is complete. ZSCAN returns every member that stays in
-- the set for the whole scan at least once, whatever the rescoring meanwhile (a ZADD that
-- changes a score keeps the member); a user returned twice is rescored twice to the same
-- score, and a user who left is simply skipped by shuffle.lua. Read only.
local page = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local tier = tonumber(ARGV[3])
local users = {}
local members = page[2]
for i = 1, #members, 2 do
  if tonumber(members[i + 1]) < tier then
    table.insert(users, members[i])
  end
end
return {page[1], users}
