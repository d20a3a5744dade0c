-- read-hash: read a protected hash without moving its fence (FencedRedisHash.peek and highest; a script so that both Redis
-- clients answer in the same flat shape).
-- KEYS[1]  the hash
-- returns  {field, value, ...}
return redis.call('HGETALL', KEYS[1])
