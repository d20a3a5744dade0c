-- fenced-read: read a protected hash with a fencing token, and raise its fence to that token
-- (read-and-advance), so that no write with a lower token is accepted after this read.
-- KEYS[1]  the protected resource (a hash); field "__fence" holds the highest token seen
-- ARGV[1]  the reader's fencing token (decimal string, no leading zeros)
-- returns  {1, field, value, ...} the hash (fence raised to ARGV[1] when it was lower);
--          {0, highest} refused: a newer token has already read or written
-- Tokens are compared as decimal strings (length, then text) so they stay exact beyond 2^53.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local highest = redis.call('HGET', KEYS[1], '__fence')
if highest and less(ARGV[1], highest) then
  return {0, highest}
end
if highest ~= ARGV[1] then redis.call('HSET', KEYS[1], '__fence', ARGV[1]) end
local out = {1}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
