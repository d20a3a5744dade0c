-- raise-mark: raise a durable high-water mark, only while ARGV[1] holds the lock.
-- KEYS[1]  lock key
-- KEYS[2]  mark key        dlock:{<key>}:mark  never expires
-- ARGV[1]  owner id
-- ARGV[2]  mark (decimal string, no leading zeros)
-- returns  1 held (mark is now >= ARGV[2]), 0 not held by this owner (nothing written)
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '|'
if not v or string.sub(v, 1, #mine) ~= mine then return 0 end
local cur = redis.call('GET', KEYS[2])
if not cur or less(cur, ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
