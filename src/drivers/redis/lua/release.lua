-- release: delete the lock only if ARGV[1] owns it, then wake the waiters.
-- KEYS[1]  lock key
-- ARGV[1]  owner id
-- ARGV[2]  release channel (pub/sub; waiters subscribe before their decisive try)
-- returns  1 released, 0 not held by this owner (never touches another owner's lock)
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '|'
if v and string.sub(v, 1, #mine) == mine then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
return 0
