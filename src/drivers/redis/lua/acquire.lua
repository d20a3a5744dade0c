-- acquire: grant the lock if nobody holds it, with a fresh fencing token.
-- KEYS[1]  lock key        dlock:{<key>}        value "<owner>|<token>", expires by PX
-- KEYS[2]  fence counter   dlock:{<key>}:fence  never expires: tokens never go backwards
-- ARGV[1]  owner id
-- ARGV[2]  ttl in ms (counted by the server's clock)
-- returns  {1, token}   granted (token as a decimal string: exact beyond 2^53)
--          {0, pttl}    busy; pttl is the holder's remaining TTL in ms (-1: no expiry)
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then
  redis.call('INCR', KEYS[2])
  local token = redis.call('GET', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
  return {1, token}
end
return {0, pttl}
