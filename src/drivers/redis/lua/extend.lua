-- extend: push the TTL of a lock out, only while ARGV[1] still owns it.
-- KEYS[1]  lock key
-- ARGV[1]  owner id
-- ARGV[2]  new ttl in ms (server clock)
-- returns  1 extended, 0 not held by this owner (expired, deleted, or someone else's)
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '|'
if v and string.sub(v, 1, #mine) == mine then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
