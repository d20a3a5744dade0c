-- inspect: read the holder of a lock without acquiring it.
-- KEYS[1]  lock key
-- returns  {value, pttl} with value "<owner>|<token>", or false when free
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
