-- ops: a batch of lock operations run as one atomic script, so the acquires, renewals and
-- releases a client issues in one tick share one command and one round trip (a batch of one is
-- the plain case). The ops travel packed in ONE argument: the client cost per argument dominates
-- a lock operation (ioredis spends about a microsecond on each), so one packed string per batch
-- makes that cost a fraction of a microsecond per operation.
-- The lock key holds "<owner>|<token>" with a PX expiry counted by the server's clock; its fence
-- counter "<lock>:fence" never expires, so tokens strictly increase across holders and restarts
-- (a busy attempt may burn a number: tokens have gaps, never repeats). A busy attempt appends
-- "|w" to the holder's value, and a release PUBLISHes on "<lock>:released" only when it finds
-- that mark: waiters are woken, and a lock nobody waits for is released without a message.
-- KEYS[1]  the lock key of the batch's first op: routes the batch to its Redis Cluster slot. On a
--          cluster every op of one batch is on that same lock (see batch.ts); on a single node a
--          batch may name any keys.
-- ARGV[1]  the ops, concatenated; each is one op letter then 3 fields "<byte length>:<bytes>":
--            a <lock> <owner> <ttl ms>    acquire if nobody holds the lock
--            e <lock> <owner> <ttl ms>    extend, only while owner holds it
--            r <lock> <owner> <unused>    release, only if owner holds it, then publish
-- returns  one line per op, "\n"-terminated, in order:
--            acquire  "1<token>" granted | "0<pttl>" busy (pttl -1: the key has no expiry)
--            extend   "1" extended | "0" not held by this owner
--            release  "1" released | "0" not held by this owner (another owner's lock is never touched)
local s, p = ARGV[1], 1
local function field()
  local colon = string.find(s, ':', p, true)
  local n = tonumber(string.sub(s, p, colon - 1))
  p = colon + n + 1
  return string.sub(s, colon + 1, colon + n)
end
local function owns(value, owner)
  return value and string.sub(value, 1, #owner + 1) == owner .. '|'
end
local out = {}
while p <= #s do
  local op = string.sub(s, p, p)
  p = p + 1
  local lock, owner, arg = field(), field(), field()
  if op == 'a' then
    local fence = lock .. ':fence'
    local t = redis.call('INCR', fence)
    -- Lua numbers are doubles: exact below 2^53; beyond, read the counter back as a string.
    if t < 9007199254740992 then t = string.format('%d', t) else t = redis.call('GET', fence) end
    if redis.call('SET', lock, owner .. '|' .. t, 'NX', 'PX', arg) then
      out[#out + 1] = '1' .. t
    else
      local held = redis.call('GET', lock)
      if held and string.sub(held, -2) ~= '|w' then redis.call('APPEND', lock, '|w') end
      out[#out + 1] = '0' .. redis.call('PTTL', lock)
    end
  elseif op == 'e' then
    if owns(redis.call('GET', lock), owner) then
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1'
    else
      out[#out + 1] = '0'
    end
  elseif op == 'r' then
    local held = redis.call('GET', lock)
    if owns(held, owner) then
      redis.call('DEL', lock)
      if string.sub(held, -2) == '|w' then redis.call('PUBLISH', lock .. ':released', '1') end
      out[#out + 1] = '1'
    else
      out[#out + 1] = '0'
    end
  else
    return redis.error_reply('dlock ops: unknown op ' .. tostring(op))
  end
end
out[#out + 1] = ''
return table.concat(out, '\n')
