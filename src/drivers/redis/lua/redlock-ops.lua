-- redlock-ops: the per-node step of the Redlock driver (src/drivers/redlock), run on each of N
-- independent Redis nodes. Like ops.lua, a batch of lock operations travels packed in ONE
-- argument (see batch.ts), so the acquires, renewals and releases a client issues in one tick
-- cost one command per node. No queue and no direct handoff: a lock needs a majority of nodes,
-- which one node cannot hand over; waiters are woken by a PUBLISH instead.
--
-- Keys of one lock (the single-node driver's names, so tools like `dlock inspect` read both):
--   <lock>        "<owner>|<token>" of the exclusive holder, or "|h" while only shared holders
--                 hold (PX: the latest expiry in <lock>:h), so that an exclusive try sees a busy
--                 key with one GET; "|w" appended once a waiter has found it busy. PX expiry
--                 counted by this node's clock
--   <lock>:h      shared holders: owner -> "<expiry ms> <token> s 0 0" (this node's ms from TIME;
--                 ops.lua's format), PEXPIREd to its latest expiry; expired entries are pruned by
--                 every step that reads them. It may outlive an exclusive holder beside it (the
--                 write holder's own read hold, `alongside`); an exclusive try that finds <lock>
--                 free looks at it
--   <lock>:x      the owner of a waiting writer: set by an exclusive waiter's try (q) that shared
--                 holders kept out, it stops new shared holders here (those already holding stay,
--                 and renew), so that a stream of overlapping readers cannot starve a writer.
--                 Removed by that writer's grant or its release (a wait that ended); otherwise it
--                 expires: PX = the holders' remaining TTL + 2 s, refreshed by each of its tries
--   <lock>:fence  this node's token counter; never expires and only goes up (INCR on an
--                 exclusive grant, INCRBY to the next value of this node's residue on a shared
--                 one, raised to the quorum's token by the write-back op)
-- Admission on this node (src/core/admission.ts, restricted to the modes Redlock grants):
-- exclusive: nothing held here; shared: no exclusive holder here, or the one it sits beside, and
-- no waiting writer (<lock>:x) unless it sits beside the write holder.
-- A release that frees what a flagged value ("|w") kept busy PUBLISHes "" on "<lock>:released"
-- (waiters subscribe there).
--
-- KEYS[1]  the lock key of the batch's first op (names the batch; a node is a single server)
-- ARGV[1]  the ops, concatenated; each is one op letter then 3 fields "<byte length>:<bytes>":
--            a <lock> <owner> <ttl ms>   exclusive: acquire if free (or confirm if owner already holds it)
--            q <lock> <owner> <ttl ms>   the same, from a subscribed waiter: when busy, flag the
--                                        value so that its release publishes
--            g <lock> <owner> <ask>      shared: acquire unless an exclusive holder (other than
--                                        <alongside>) holds here or a writer waits, or confirm; <ask> is
--                                        "<ttl ms> <residue> <nodes>[ <alongside>]": the token is
--                                        the counter's next value = <residue> mod <nodes> (each node
--                                        its own residue, so that shared holders granted at once
--                                        over different majorities never share a token)
--            w <lock> <owner> <ask>      the same, from a subscribed waiter (flags when busy)
--            e <lock> <owner> <ttl ms>   extend, only while owner holds it (either mode)
--            r <lock> <owner> <unused>   release owner's hold (either mode), only its own
--            c <lock> <owner> <token>[ <ttl ms>[ s]]
--                                        commit the quorum's token: fence = max(fence, token);
--                                        if owner holds here (either mode), its hold carries
--                                        <token>. With a ttl, also restore: if owner holds nothing
--                                        here (this node lost it, e.g. restarted empty), hold it
--                                        again with that PX: exclusively when nothing is held here,
--                                        shared ("s") when no exclusive holder is. Never over
--                                        another owner. The driver sends it only after a majority
--                                        renewed (see redlock/index.ts).
--            f <lock> <unused> <unused>  force-release (an operator's eviction): remove every hold
--                                        whoever owns it and PUBLISH on "<lock>:released"; the
--                                        fence counter is never touched
-- returns  one line per op, "\n"-terminated, in order:
--            a, q, g, w  "1<token>" held | "0<pttl> <holder's value>" busy (pttl -1: no expiry;
--                        the value "|h[|w]": shared holders; "|x": free, but a writer waits)
--            e     "1<token>" done (exclusive) | "1<token> s" done (shared) | "0" held by another
--                  exclusive owner (never touched) | "2" free | "3" held by other shared holders only
--            r     "1" done | "0" not held by this owner (another owner's hold is never touched)
--            c     "1" owner holds it (now) | "0" it does not (the fence is raised either way)
--            f     "<fence> <the deleted exclusive value, or nothing>[ <each deleted shared owner>]"
local MARK = '|h'
local s, p = ARGV[1], 1
local function field()
  local colon = string.find(s, ':', p, true)
  local n = tonumber(string.sub(s, p, colon - 1))
  p = colon + n + 1
  return string.sub(s, colon + 1, colon + n)
end
local function owns(value, owner)
  return owner ~= '' and value and string.sub(value, 1, #owner + 1) == owner .. '|'
end
local function flagged(value)
  return string.sub(value, -2) == '|w'
end
local function isMark(value)
  return value and string.sub(value, 1, 2) == MARK
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
local function int(n)
  return string.format('%d', n)
end
-- include: now.lua
-- Lua numbers are doubles: exact below 2^53; beyond, read the counter back as a string.
local function counted(fence, t)
  if t < 9007199254740992 then return int(t) end
  return redis.call('GET', fence)
end
local function exclusiveToken(lock)
  local fence = lock .. ':fence'
  return counted(fence, redis.call('INCR', fence))
end
-- The counter's next value that is `residue` mod `nodes` (the remainder of the decimal string,
-- digit by digit: exact at any size).
local function sharedToken(lock, residue, nodes)
  local fence = lock .. ':fence'
  local cur = redis.call('GET', fence) or '0'
  local m = 0
  for i = 1, #cur do m = (m * 10 + string.byte(cur, i) - 48) % nodes end
  return counted(fence, redis.call('INCRBY', fence, (residue - m - 1) % nodes + 1))
end
local function entry(exp, token)
  return int(exp) .. ' ' .. token .. ' s 0 0'
end
-- The live shared holders: st.h[owner] = {exp, token}, st.n (expired entries are removed).
local function load(lock)
  local st = { h = {}, n = 0 }
  local hk = lock .. ':h'
  local all = redis.call('HGETALL', hk)
  for i = 1, #all, 2 do
    local e, t = string.match(all[i + 1], '^(%d+) (%d+)')
    if e and tonumber(e) > nowMs() then
      st.h[all[i]] = { exp = tonumber(e), token = t }
      st.n = st.n + 1
    else
      redis.call('HDEL', hk, all[i])
    end
  end
  return st
end
local function add(lock, st, owner, exp, token)
  if not st.h[owner] then st.n = st.n + 1 end
  st.h[owner] = { exp = exp, token = token }
  redis.call('HSET', lock .. ':h', owner, entry(exp, token))
end
-- After the shared holders changed (held: <lock>'s value): <lock>:h expires with its latest
-- entry, and so does the mark when no exclusive holder is here (its flag kept); the mark goes
-- with the last shared holder.
local function store(lock, held, st)
  local last = 0
  for _, e in pairs(st.h) do
    if e.exp > last then last = e.exp end
  end
  local free = not held or isMark(held)
  if st.n > 0 then
    local ms = last - nowMs()
    redis.call('PEXPIRE', lock .. ':h', ms)
    if free then redis.call('SET', lock, (held and flagged(held)) and MARK .. '|w' or MARK, 'PX', ms) end
  elseif held and isMark(held) then
    redis.call('DEL', lock)
  end
end
local function busy(lock, held, flag)
  if flag and not flagged(held) then
    held = held .. '|w'
    redis.call('SET', lock, held, 'KEEPTTL')
  end
  return '0' .. redis.call('PTTL', lock) .. ' ' .. held
end
local out = {}
while p <= #s do
  local op = string.sub(s, p, p)
  p = p + 1
  local lock, owner, arg = field(), field(), field()
  if op == 'a' or op == 'q' then
    local held = redis.call('GET', lock)
    -- A free key costs one more look: shared holders that outlived the exclusive one they sat
    -- beside (they hold it), or a waiting writer's mark.
    local more = not held and redis.call('EXISTS', lock .. ':h', lock .. ':x') > 0
    if more and redis.call('EXISTS', lock .. ':h') == 1 then
      store(lock, nil, load(lock))
      held = redis.call('GET', lock)
    end
    if not held then
      local t = exclusiveToken(lock)
      local x = more and redis.call('GET', lock .. ':x')
      if x == owner then redis.call('DEL', lock .. ':x') end
      -- Readers that a waiting writer kept out wait for this release.
      redis.call('SET', lock, owner .. '|' .. t .. (x and '|w' or ''), 'PX', arg)
      out[#out + 1] = '1' .. t
    elseif owns(held, owner) then
      -- Ours already (a retried attempt): confirm with a fresh TTL.
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1' .. tokenOf(held, owner)
    else
      if op == 'q' and isMark(held) then
        -- Shared holders keep us out: stop new ones here (unless another writer already does).
        local x = redis.call('GET', lock .. ':x')
        if not x or x == owner then redis.call('SET', lock .. ':x', owner, 'PX', math.max(redis.call('PTTL', lock), 0) + 2000) end
      end
      out[#out + 1] = busy(lock, held, op == 'q')
    end
  elseif op == 'g' or op == 'w' then
    local ttl, residue, nodes, along = string.match(arg, '^(%d+) (%d+) (%d+) ?(.*)$')
    local held = redis.call('GET', lock)
    local st = load(lock)
    local mine = st.h[owner]
    if mine then
      -- Ours already (a retried attempt): confirm with a fresh TTL.
      add(lock, st, owner, nowMs() + tonumber(ttl), mine.token)
      store(lock, held, st)
      out[#out + 1] = '1' .. mine.token
    elseif held and not isMark(held) and not (along ~= '' and owns(held, along)) then
      store(lock, held, st)
      out[#out + 1] = busy(lock, held, op == 'w')
    elseif along == '' and redis.call('EXISTS', lock .. ':x') == 1 then
      -- A writer waits: no new shared holder before it (released shared holds wake it).
      store(lock, held, st)
      held = redis.call('GET', lock)
      if held then
        out[#out + 1] = busy(lock, held, op == 'w')
      else
        out[#out + 1] = '0' .. redis.call('PTTL', lock .. ':x') .. ' |x'
      end
    else
      local t = sharedToken(lock, tonumber(residue), tonumber(nodes))
      add(lock, st, owner, nowMs() + tonumber(ttl), t)
      store(lock, held, st)
      out[#out + 1] = '1' .. t
    end
  elseif op == 'e' then
    local held = redis.call('GET', lock)
    if owns(held, owner) then
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1' .. tokenOf(held, owner)
    else
      local hk = lock .. ':h'
      local info = redis.call('HGET', hk, owner)
      local e, t
      if info then e, t = string.match(info, '^(%d+) (%d+)') end
      if e and tonumber(e) > nowMs() then
        local ms = tonumber(arg)
        redis.call('HSET', hk, owner, entry(nowMs() + ms, t))
        if redis.call('PTTL', hk) < ms then redis.call('PEXPIRE', hk, ms) end
        if (not held or isMark(held)) and redis.call('PTTL', lock) < ms then
          redis.call('SET', lock, (held and flagged(held)) and MARK .. '|w' or MARK, 'PX', ms)
        end
        out[#out + 1] = '1' .. t .. ' s'
      elseif held and not isMark(held) then
        out[#out + 1] = '0'
      elseif held then
        out[#out + 1] = '3'
      else
        out[#out + 1] = '2'
      end
    end
  elseif op == 'r' then
    local held = redis.call('GET', lock)
    if owns(held, owner) then
      -- Shared holders beside it (the write holder's own read hold) keep <lock>:h; the next step
      -- that reads it puts the mark back (an exclusive try on a free key looks there), so that
      -- a mutex's release stays one GET + DEL.
      redis.call('DEL', lock)
      if flagged(held) then redis.call('PUBLISH', lock .. ':released', '') end
      out[#out + 1] = '1'
    else
      local info = redis.call('HGET', lock .. ':h', owner)
      local e
      if info then e = string.match(info, '^(%d+)') end
      if e and tonumber(e) > nowMs() then
        redis.call('HDEL', lock .. ':h', owner)
        local st = load(lock)
        store(lock, held, st)
        if st.n == 0 and isMark(held) and flagged(held) then redis.call('PUBLISH', lock .. ':released', '') end
        out[#out + 1] = '1'
      else
        if info then redis.call('HDEL', lock .. ':h', owner) end
        -- A writer whose wait ended: it stops readers no more.
        if redis.call('GET', lock .. ':x') == owner then redis.call('DEL', lock .. ':x') end
        out[#out + 1] = '0'
      end
    end
  elseif op == 'c' then
    local token, ttl, mode = string.match(arg, '^(%d+) ?(%d*) ?(%a?)$')
    local fence = lock .. ':fence'
    local cur = redis.call('GET', fence)
    if not cur or less(cur, token) then redis.call('SET', fence, token) end
    local held = redis.call('GET', lock)
    local info = owner ~= '' and redis.call('HGET', lock .. ':h', owner)
    local e
    if info then e = string.match(info, '^(%d+)') end
    if owns(held, owner) then
      redis.call('SET', lock, owner .. '|' .. token .. (flagged(held) and '|w' or ''), 'KEEPTTL')
      out[#out + 1] = '1'
    elseif e and tonumber(e) > nowMs() then
      redis.call('HSET', lock .. ':h', owner, entry(tonumber(e), token))
      out[#out + 1] = '1'
    elseif ttl ~= '' and mode == 's' and (not held or isMark(held)) then
      local st = load(lock)
      add(lock, st, owner, nowMs() + tonumber(ttl), token)
      store(lock, held, st)
      out[#out + 1] = '1'
    elseif ttl ~= '' and mode == '' and not held and load(lock).n == 0 then
      redis.call('SET', lock, owner .. '|' .. token, 'PX', ttl)
      out[#out + 1] = '1'
    else
      out[#out + 1] = '0'
    end
  elseif op == 'f' then
    local held = redis.call('GET', lock)
    local st = load(lock)
    local gone = (held and not isMark(held)) and held or ''
    for o in pairs(st.h) do gone = gone .. ' ' .. o end
    if held or st.n > 0 then
      redis.call('DEL', lock, lock .. ':h')
      redis.call('PUBLISH', lock .. ':released', '')
    end
    out[#out + 1] = (redis.call('GET', lock .. ':fence') or '0') .. ' ' .. gone
  else
    return redis.error_reply('dlock redlock-ops: unknown op ' .. tostring(op))
  end
end
out[#out + 1] = ''
return table.concat(out, '\n')
