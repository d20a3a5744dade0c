-- redlock-ops: the per-node step of the Redlock driver (src/drivers/redlock), run on each of N
-- independent Redis nodes. Like ops.lua, a batch of lock operations travels packed in ONE
-- argument (see batch.ts), so the acquires, renewals and releases a client issues in one tick
-- cost one command per node. No queue and no direct handoff: a lock needs a majority of nodes,
-- which one node cannot hand over; waiters are woken by a PUBLISH instead.
--
-- Keys of one lock (the single-node driver's names, so tools like `dlock inspect` read both):
--   <lock>        "<owner>|<token>", with "|w" appended once a waiter has found it busy;
--                 PX expiry counted by this node's clock
--   <lock>:fence  this node's token counter; never expires and only goes up (INCR on a grant,
--                 raised to the quorum's token by the write-back op)
-- A release of a value flagged "|w" PUBLISHes "" on "<lock>:released" (waiters subscribe there).
--
-- KEYS[1]  the lock key of the batch's first op (names the batch; a node is a single server)
-- ARGV[1]  the ops, concatenated; each is one op letter then 3 fields "<byte length>:<bytes>":
--            a <lock> <owner> <ttl ms>   acquire if free (or confirm if owner already holds it)
--            q <lock> <owner> <ttl ms>   the same, from a subscribed waiter: when busy, flag the
--                                        value so that its release publishes
--            e <lock> <owner> <ttl ms>   extend, only while owner holds it
--            r <lock> <owner> <unused>   release, only if owner holds it
--            c <lock> <owner> <token>[ <ttl ms>]
--                                        commit the quorum's token: fence = max(fence, token);
--                                        if owner holds the lock, its value carries <token>.
--                                        With a ttl, also restore: if the lock is free (this node
--                                        lost it, e.g. restarted empty), set "<owner>|<token>" with
--                                        that PX. Never over another owner. The driver sends it
--                                        only after a majority renewed (see redlock/index.ts).
--            f <lock> <unused> <unused>  force-release (an operator's eviction): delete the lock
--                                        whoever holds it and PUBLISH on "<lock>:released"; the
--                                        fence counter is never touched
-- returns  one line per op, "\n"-terminated, in order:
--            a, q  "1<token>" held | "0<pttl> <holder's value>" busy (pttl -1: no expiry)
--            e     "1<token>" done | "0" held by another owner (never touched) | "2" free
--            r     "1" done | "0" not held by this owner (another owner's lock is never touched)
--            c     "1" owner holds it (now) | "0" it does not (the fence is raised either way)
--            f     "<fence> <the deleted value, or nothing when the lock was free>"
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
local function flagged(value)
  return string.sub(value, -2) == '|w'
end
-- The token of a value "<owner>|<token>[|w]".
local function tokenOf(value, owner)
  local rest = string.sub(value, #owner + 2)
  if flagged(rest) then rest = string.sub(rest, 1, -3) end
  return rest
end
-- Decimal strings without leading zeros compare by length, then text: exact beyond 2^53.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local out = {}
while p <= #s do
  local op = string.sub(s, p, p)
  p = p + 1
  local lock, owner, arg = field(), field(), field()
  if op == 'a' or op == 'q' then
    local held = redis.call('GET', lock)
    if not held then
      local fence = lock .. ':fence'
      local t = redis.call('INCR', fence)
      -- Lua numbers are doubles: exact below 2^53; beyond, read the counter back as a string.
      if t < 9007199254740992 then t = string.format('%d', t) else t = redis.call('GET', fence) end
      redis.call('SET', lock, owner .. '|' .. t, 'PX', arg)
      out[#out + 1] = '1' .. t
    elseif owns(held, owner) then
      -- Ours already (a retried attempt): confirm with a fresh TTL.
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1' .. tokenOf(held, owner)
    else
      if op == 'q' and not flagged(held) then
        held = held .. '|w'
        redis.call('SET', lock, held, 'KEEPTTL')
      end
      out[#out + 1] = '0' .. redis.call('PTTL', lock) .. ' ' .. held
    end
  elseif op == 'e' then
    local held = redis.call('GET', lock)
    if owns(held, owner) then
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1' .. tokenOf(held, owner)
    elseif held then
      out[#out + 1] = '0'
    else
      out[#out + 1] = '2'
    end
  elseif op == 'r' then
    local held = redis.call('GET', lock)
    if owns(held, owner) then
      redis.call('DEL', lock)
      if flagged(held) then redis.call('PUBLISH', lock .. ':released', '') end
      out[#out + 1] = '1'
    else
      out[#out + 1] = '0'
    end
  elseif op == 'c' then
    local space = string.find(arg, ' ', 1, true)
    local token, ttl = arg, nil
    if space then token, ttl = string.sub(arg, 1, space - 1), string.sub(arg, space + 1) end
    local fence = lock .. ':fence'
    local cur = redis.call('GET', fence)
    if not cur or less(cur, token) then redis.call('SET', fence, token) end
    local held = redis.call('GET', lock)
    if owns(held, owner) then
      redis.call('SET', lock, owner .. '|' .. token .. (flagged(held) and '|w' or ''), 'KEEPTTL')
      out[#out + 1] = '1'
    elseif not held and ttl then
      redis.call('SET', lock, owner .. '|' .. token, 'PX', ttl)
      out[#out + 1] = '1'
    else
      out[#out + 1] = '0'
    end
  elseif op == 'f' then
    local held = redis.call('GET', lock)
    if held then
      redis.call('DEL', lock)
      redis.call('PUBLISH', lock .. ':released', '')
    end
    out[#out + 1] = (redis.call('GET', lock .. ':fence') or '0') .. ' ' .. (held or '')
  else
    return redis.error_reply('dlock redlock-ops: unknown op ' .. tostring(op))
  end
end
out[#out + 1] = ''
return table.concat(out, '\n')
