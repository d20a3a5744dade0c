-- ops: a batch of lock operations run as one atomic script, so the acquires, renewals and
-- releases a client issues in one tick share one command and one round trip (a batch of one is
-- the plain case). The ops travel packed in ONE argument: the client cost per argument dominates
-- a lock operation (ioredis spends about a microsecond on each), so one packed string per batch
-- makes that cost a fraction of a microsecond per operation.
--
-- Keys of one lock (all share the hash tag of <lock> = "<prefix>:{<key>}", so one cluster slot):
--   <lock>        "<owner>|<token>", PX expiry counted by the server's clock
--   <lock>:fence  token counter; never expires, so tokens strictly increase across holders and
--                 restarts (INCRed only by a grant: a grant whose reply is lost leaves a gap)
--   <lock>:q      waiting owners in arrival order (list), and <lock>:qw their "<expiry ms> <ttl ms>"
-- Direct handoff: a release (or a cancelled grant) gives the lock to the first live waiter in
-- the queue, with a fresh token, and PUBLISHes "<owner>|<token>" on "<prefix>:c:<clientId>", the
-- channel of the waiter's client: the waiter holds the lock one hop after the release, and no
-- other waiter is woken. Waiters re-try by themselves within the holder's remaining TTL, so a
-- lost message costs at most that.
--
-- KEYS[1]  the lock key of the batch's first op: routes the batch to its Redis Cluster slot. On a
--          cluster every op of one batch is on that same lock (see batch.ts); on a single node a
--          batch may name any keys.
-- ARGV[1]  the ops, concatenated; each is one op letter then 3 fields "<byte length>:<bytes>":
--            a <lock> <owner> <ttl ms>   acquire if free (or confirm if already granted to owner)
--            q <lock> <owner> <ttl ms>   the same, and when busy, queue owner (or refresh its entry)
--            e <lock> <owner> <ttl ms>   extend, only while owner holds it
--            r <lock> <owner> <unused>   release, only if owner holds it; hand off to the next waiter
--            c <lock> <owner> <unused>   leave the queue; if granted meanwhile, release (hand off)
-- returns  one line per op, "\n"-terminated, in order:
--            a, q  "1<token>" held | "0<pttl>" busy (pttl -1: the key has no expiry)
--            e, r  "1" done | "0" not held by this owner (another owner's lock is never touched)
--            c     "1" it had been granted and is now released | "0" it was only queued (or absent)
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
local now
local function nowMs()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
local function nextToken(lock)
  local fence = lock .. ':fence'
  local t = redis.call('INCR', fence)
  -- Lua numbers are doubles: exact below 2^53; beyond, read the counter back as a string.
  if t < 9007199254740992 then return string.format('%d', t) end
  return redis.call('GET', fence)
end
-- Give the lock to the first live waiter, or free it.
local function handoff(lock)
  local q, qw = lock .. ':q', lock .. ':qw'
  while true do
    local head = redis.call('LPOP', q)
    if not head then
      redis.call('DEL', lock)
      return
    end
    local info = redis.call('HGET', qw, head)
    redis.call('HDEL', qw, head)
    if info then
      local sp = string.find(info, ' ', 1, true)
      if tonumber(string.sub(info, 1, sp - 1)) > nowMs() then
        local t = nextToken(lock)
        redis.call('SET', lock, head .. '|' .. t, 'PX', string.sub(info, sp + 1))
        local prefix = string.match(lock, '^(.-):{') or lock
        local client = string.match(head, ':(%x+):%d+$') or head
        redis.call('PUBLISH', prefix .. ':c:' .. client, head .. '|' .. t)
        return
      end
    end
  end
end
local out = {}
while p <= #s do
  local op = string.sub(s, p, p)
  p = p + 1
  local lock, owner, arg = field(), field(), field()
  if op == 'a' or op == 'q' then
    -- Look first: a busy try then costs GET + PTTL, and burns no token (INCR + SET NX on every
    -- busy try were 2 of the ~27 commands of a contended cycle, twice per waiter).
    local held = redis.call('GET', lock)
    if not held then
      local t = nextToken(lock)
      redis.call('SET', lock, owner .. '|' .. t, 'PX', arg)
      -- A waiter that got in by itself (the lock had expired) leaves the queue.
      if op == 'q' and redis.call('HDEL', lock .. ':qw', owner) == 1 then redis.call('LREM', lock .. ':q', 0, owner) end
      out[#out + 1] = '1' .. t
    else
      if owns(held, owner) then
        -- Granted to us by a handoff whose message we have not seen (or not yet): confirm.
        redis.call('PEXPIRE', lock, arg)
        out[#out + 1] = '1' .. string.sub(held, #owner + 2)
      else
        local pttl = redis.call('PTTL', lock)
        if op == 'q' then
          -- The entry lives until our next try (within the holder's TTL) plus a margin.
          local life = (pttl > 0 and pttl or 30000) + 2000
          local qw = lock .. ':qw'
          if redis.call('HSET', qw, owner, (nowMs() + life) .. ' ' .. arg) == 1 then
            redis.call('RPUSH', lock .. ':q', owner)
          end
          -- The two keys (same entries, so they empty together) must outlive every entry. Set to
          -- twice what is needed, so the next waiters' tries mostly find it long enough already:
          -- 2 PEXPIREs per try were ~1.8 commands of a contended cycle. Keys of an abandoned
          -- queue linger one more life at most; entries carry their own expiry either way.
          if redis.call('PTTL', qw) < life then
            redis.call('PEXPIRE', qw, 2 * life)
            redis.call('PEXPIRE', lock .. ':q', 2 * life)
          end
        end
        out[#out + 1] = '0' .. pttl
      end
    end
  elseif op == 'e' then
    if owns(redis.call('GET', lock), owner) then
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1'
    else
      out[#out + 1] = '0'
    end
  elseif op == 'r' or op == 'c' then
    if op == 'c' then
      redis.call('LREM', lock .. ':q', 0, owner)
      redis.call('HDEL', lock .. ':qw', owner)
    end
    if owns(redis.call('GET', lock), owner) then
      handoff(lock)
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
