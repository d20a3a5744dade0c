-- fenced: one fenced step on a protected hash (FencedRedisHash). Its field "__fence" holds the
-- highest token that has read or written it; a step with a lower token is refused.
-- KEYS[1]  the protected resource (a hash)
-- ARGV[1]  'read': raise the fence to the token and return the hash (read-and-advance), so that no
--          write with a lower token is accepted after this read; 'write': set the fields
-- ARGV[2]  the fencing token (decimal string, no leading zeros)
-- ARGV[3..] write only: field, value, field, value, ...
-- returns  read: {1, field, value, ...} (the fence included); write: {1, token};
--          refused: {0, highest}: a newer token has read or written already
-- Tokens are compared as decimal strings (length, then text) so they stay exact beyond 2^53.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local token = ARGV[2]
local highest = redis.call('HGET', KEYS[1], '__fence')
if highest and less(token, highest) then
  return {0, highest}
end
if ARGV[1] == 'read' then
  if highest ~= token then redis.call('HSET', KEYS[1], '__fence', token) end
  local out = {1}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do out[#out + 1] = all[i] end
  return out
end
local args = {'__fence', token}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
return {1, token}
