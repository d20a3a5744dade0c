-- read-mark: read a durable high-water mark.
-- KEYS[1]  mark key
-- returns  the mark (decimal string), or false when never written
return redis.call('GET', KEYS[1])
