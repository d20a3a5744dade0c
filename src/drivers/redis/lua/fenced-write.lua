-- fenced-write: write fields of a protected hash only with a token at least as high as any seen.
-- KEYS[1]  the protected resource (a hash); field "__fence" holds the highest token accepted
-- ARGV[1]  the writer's fencing token (decimal string, no leading zeros)
-- ARGV[2..] field, value, field, value, ...
-- returns  {1, token} accepted; {0, highest} rejected: a newer token has read or written already
-- Tokens are compared as decimal strings (length, then text) so they stay exact beyond 2^53.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local highest = redis.call('HGET', KEYS[1], '__fence')
if highest and less(ARGV[1], highest) then
  return {0, highest}
end
local args = {'__fence', ARGV[1]}
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
return {1, ARGV[1]}
