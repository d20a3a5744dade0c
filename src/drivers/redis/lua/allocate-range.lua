-- allocate-range: advance a durable id counter by a step; the caller owns the range below the result.
-- KEYS[1]  counter key     dlock:{ids:<name>}:seq  never expires
-- ARGV[1]  count (decimal string, >= 1)
-- returns  the counter's new value, the range end (decimal string: exact beyond 2^53; Lua numbers
--          are doubles, so the value is read back with GET rather than taken from INCRBY's reply),
--          or false when the counter would pass 2^63 - 1 (nothing is written then)
local r = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(r) == 'table' and r.err then
  if string.find(r.err, 'overflow', 1, true) then return false end
  return r
end
return redis.call('GET', KEYS[1])
