-- ops: a batch of lock operations run as one atomic script, so the acquires, renewals and
-- releases a client issues in one tick share one command and one round trip (a batch of one is
-- the plain case). The ops travel packed in ONE argument: the client cost per argument dominates
-- a lock operation (ioredis spends about a microsecond on each), so one packed string per batch
-- makes that cost a fraction of a microsecond per operation.
--
-- Keys of one lock (all share the hash tag of <lock> = "<prefix>:{<key>}", so one cluster slot):
--   <lock>        "<owner>|<token>" of the exclusive holder, PX expiry counted by the server's
--                 clock; or "|h" while only <lock>:h holds (PX: the latest expiry in it), so that
--                 an exclusive try sees a busy key with one GET, as it does for a mutex
--   <lock>:h      shared and permit holders: owner -> "<expiry ms> <token> <s|p> <permits> <limit>"
--                 (server ms from TIME), PEXPIREd to the latest expiry; expired entries are
--                 pruned by every step that reads them
--   <lock>:fence  token counter, shared by every mode; never expires, so tokens strictly increase
--                 per name across modes, holders and restarts (a grant whose reply is lost leaves a gap)
--   <lock>:w      "1" while waiters may be queued (or shared holders sit beside an exclusive one),
--                 "f" once a fair request or a reader queued (until the queue is found empty):
--                 read with <lock> in one MGET, it sends an exclusive try on a free key to the full
--                 rule; it outlives <lock>:q and is dropped once the queue is found empty
--   <lock>:d      the owner of an exclusive queue head that was told it heads the queue and
--                 whose turn is not due yet, PX until it is due: lets a mutex's barging acquire
--                 and release see "defer to bargers" in the MGET they start with (no queue reads,
--                 no TIME). Only a cache of what the queue says: deleted whenever the queue's head
--                 may have changed, set again by whichever step finds a told head not yet due
--   <lock>:q      waiting owners in arrival order (list), and <lock>:qw their
--                 "<expiry ms> <ttl ms> <x|s|p> <permits> <limit> <since> <alongside>"
--                 (<since>: see "Bounded barging" below)
-- Admission (src/core/admission.ts, the same rule): exclusive: nothing ahead; shared: no
-- exclusive ahead; k permits of L: no exclusive ahead and the permits ahead + k <= L; alongside:
-- admitted while that owner holds exclusively. "Ahead" is the holders and the waiters queued
-- before the request, except while bounded barging lets a newcomer (or the releaser) go first.
-- Bounded barging (requests without fairness). A handoff wakes another process, which on a busy
-- host costs far more than the holder's own next cycle; so a key that a release leaves free is
-- not handed to a queue head that competes with the releaser (an exclusive head after an
-- exclusive release, a permits head after a permits release) until that head has waited HEAD_MS
-- as the head: until then whoever asks first takes it, and the releaser, which usually asks again
-- at once, keeps its key without a cross-process wake-up. Counted from when the waiter became the
-- head (its enqueue, or the handover to the head before it: <since>), not from its enqueue,
-- because under continuous contention every waiter behind the head has waited long already: from
-- the enqueue, every grant would be a handoff again. So no head waits more than HEAD_MS plus the
-- holder's section plus one handoff, and a waiter k places back about k times that. Never while
-- a fair request or a reader is queued (<lock>:w = "f": a read-write lock's queue stays FIFO,
-- readers gain nothing from barging, they share), never past a shared head, never for a fair
-- request (<since> "0": always due). A waiter that becomes the head is woken (a "<owner>|"
-- message, no grant: the client tries again HEAD_MS + 1 after it, when its turn is due at the
-- latest, not at once), and every busy answer to a head not yet due names when it is due ("t" on
-- <since>: it was told; a head not told is woken by the first release that leaves the key to
-- bargers), so a key left free by a releaser that does not come back goes to the head by itself
-- within HEAD_MS + 1 of that wake-up. A release that leaves the key to bargers answers "2", and
-- a client that does not ask for the key again before its next event-loop turn passes it on at
-- once ("k"): the head gets it one hop later, not at its due time, when the releaser is done.
-- Direct handoff: a release (or a cancelled grant, or a step that finds a holder expired) gives
-- the key to the queue's heads in order while the rule admits them (FIFO: it stops at the first
-- that does not fit), each with a fresh token, and PUBLISHes "<owner>|<token>" on
-- "<prefix>:c:<clientId>", the channel of the waiter's client: the waiter holds the lock one hop
-- after the release, and no other waiter is woken ("<owner>|", no token: a wake-up, not a grant). Waiters re-try by themselves within the
-- holders' remaining TTL, so a lost message costs at most that.
--
-- KEYS[1]  the lock key of the batch's first op: routes the batch to its Redis Cluster slot. On a
--          cluster every op of one batch is on that same lock (see batch.ts); on a single node a
--          batch may name any keys.
-- ARGV[1]  the ops, concatenated; each is one op letter then 3 fields "<byte length>:<bytes>":
--            a <lock> <owner> <ttl ms>   exclusive: acquire if free (or confirm if already granted to owner);
--                                        "<ttl ms>f": with fairness (never barges, queued as due)
--            q <lock> <owner> <ttl ms>   the same, and when busy, queue owner (or refresh its entry)
--            g <lock> <owner> <ask>      any admission: acquire if admitted (or confirm); <ask> is
--                                        "<ttl ms> <x|s|p> <permits> <limit> <fair 0|1> [<alongside>]"
--            w <lock> <owner> <ask>      the same, and when not admitted, queue owner (or refresh)
--            e <lock> <owner> <ttl ms>   extend, only while owner holds it (in any mode)
--            r <lock> <owner> <unused>   release, only if owner holds it; hand over to the next waiters
--            k <lock> <unused> <unused>  pass on: hand what is free to the queue's heads, due or not
--                                        (sent by a releaser answered "2" that did not ask again)
--            c <lock> <owner> <unused>   leave the queue; if granted meanwhile, release (hand over)
--            f <lock> <unused> <unused>  force-release (an operator's eviction): remove every holder
--                                        (exclusive, shared, permits), whoever owns it, then hand
--                                        over to the queue's heads; <lock>:fence is never touched
-- returns  one line per op, "\n"-terminated, in order:
--            a, q, g, w  "1<token>" held | "0<ms>" busy (ms: until the soonest holder's expiry, -1 unknown)
--            e, r        "1" done | "0" not held by this owner (another owner's hold is never touched)
--                        | "2" (r) released and left to bargers while a told head waits for its turn
--            k           "1" handed to a waiter | "0" nothing to hand over, or held
--            c           "1" it had been granted and is now released | "0" it was only queued (or absent)
--            f           "<holds removed> <fence>": the counter before any handover, so that every
--                        later grant (the handovers included) has a greater token
local HEAD_MS = 5 -- BARGE_BOUND_MS of src/core/admission.ts, counted as the head (see above)
local MARK = '|h'
local s, p = ARGV[1], 1
local function field()
  local colon = string.find(s, ':', p, true)
  local n = tonumber(string.sub(s, p, colon - 1))
  p = colon + n + 1
  return string.sub(s, colon + 1, colon + n)
end
local function int(n)
  return string.format('%d', n)
end
local function nextToken(lock)
  local fence = lock .. ':fence'
  local t = redis.call('INCR', fence)
  -- Lua numbers are doubles: exact below 2^53; beyond, read the counter back as a string.
  if t < 9007199254740992 then return int(t) end
  return redis.call('GET', fence)
end
local function owns(value, owner)
  return value and string.sub(value, 1, #owner + 1) == owner .. '|'
end
-- include: now.lua
-- The plain cases, decided before the rest of the script is set up (creating its ~35 local
-- functions took about a third of an uncontended acquire or release: 13.4-13.7 -> 9.0-9.7 us
-- per EVALSHA): an exclusive try ('a', 'q') of a key that is free and that nobody waits for
-- (<lock>:w absent), and the release ('r') of our own exclusive hold that nobody waits for; the
-- same for shared and permits holds ('g', 'w'; 'r'): admitted over the live holders alone while
-- nobody waits and no exclusive holder is there (a semaphore's uncontended acquire and release:
-- 38.8-46.4 -> 24.2-25.5 us per EVALSHA, the pair alternating, the old and new script on one
-- server, 5,000 pairs each).
-- Answers the op's line, or nil and what it read (<lock>, <lock>:w, <lock>:d: one MGET), which
-- the full rule below starts from. A busy try costs no token (INCR + SET NX on every busy try
-- were 2 of the ~27 commands of a contended cycle, twice per waiter).
local function plain(op, lock, owner, arg)
  local v = redis.call('MGET', lock, lock .. ':w', lock .. ':d')
  if v[2] then
    -- A mutex under contention, nobody fair queued (<lock>:w "1") and a told exclusive head
    -- not due yet (<lock>:d): the barging try of the free key by anyone but that head, and the
    -- release of our own exclusive hold with no shared holder beside it ("2": left to bargers,
    -- the head told already). The two steps of most contended cycles: 19.3-24.2 -> 15.8-17.0 us
    -- per EVALSHA (server time, the two alternating, 10,000 cycles, the old and new script on one
    -- server): no longer than the uncontended plain ones.
    if v[2] ~= '1' or not v[3] or op == 'g' or op == 'w' then return nil, v end
    if op == 'r' then
      if owns(v[1], owner) and redis.call('EXISTS', lock .. ':h') == 0 then
        redis.call('DEL', lock)
        return '2'
      end
    elseif not v[1] and v[3] ~= owner and string.byte(arg, -1) ~= 102 then
      local t = nextToken(lock)
      redis.call('SET', lock, owner .. '|' .. t, 'PX', arg)
      -- Leaves the queue if it was in it (the head is not: <lock>:d names another owner).
      if redis.call('HDEL', lock .. ':qw', owner) == 1 then
        redis.call('LREM', lock .. ':q', 0, owner)
        redis.call('DEL', lock .. ':d')
      end
      return '1' .. t
    end
    return nil, v
  end
  if op == 'r' then
    if owns(v[1], owner) then
      redis.call('DEL', lock)
      return '1'
    end
    if v[1] == MARK then
      -- A shared or permits hold: our own entry alone (the others are not read; expired ones
      -- are pruned by the next step that reads them all). The mark goes with the last entry.
      local hk = lock .. ':h'
      local info = redis.call('HGET', hk, owner)
      local e = info and tonumber(string.match(info, '^(%d+) '))
      if e and e > nowMs() then
        redis.call('HDEL', hk, owner)
        if redis.call('HLEN', hk) == 0 then redis.call('DEL', lock) end
        return '1'
      end
    end
  elseif op == 'g' or op == 'w' then
    if v[1] and v[1] ~= MARK then return nil, v end
    local ttl, m, k, l = string.match(arg, '^(%d+) ([sp]) (%d+) (%d+) [01]$')
    if not ttl then return nil, v end
    local hk = lock .. ':h'
    local all = redis.call('HGETALL', hk)
    local used, last = 0, 0
    for i = 1, #all, 2 do
      -- Ours already (a confirmation), or an expired entry to prune: the full rule.
      if all[i] == owner then return nil, v end
      local e, em, ek = string.match(all[i + 1], '^(%d+) %d+ (%a) (%d+) ')
      e = tonumber(e)
      if not e or e <= nowMs() then return nil, v end
      if e > last then last = e end
      if em == 'p' then used = used + tonumber(ek) end
    end
    if m == 'p' and used + tonumber(k) > tonumber(l) then return nil, v end
    local t = nextToken(lock)
    local e = nowMs() + tonumber(ttl)
    redis.call('HSET', hk, owner, int(e) .. ' ' .. t .. ' ' .. m .. ' ' .. k .. ' ' .. l)
    -- <lock>:h and the mark outlive every entry (see store()).
    if e > last or not v[1] then
      redis.call('PEXPIRE', hk, ttl)
      redis.call('SET', lock, MARK, 'PX', ttl)
    end
    return '1' .. t
  elseif not v[1] then
    local t = nextToken(lock)
    if string.byte(arg, -1) == 102 then arg = string.sub(arg, 1, -2) end -- "f": fair
    redis.call('SET', lock, owner .. '|' .. t, 'PX', arg)
    return '1' .. t
  end
  return nil, v
end
-- A batch of one plain op ends here; otherwise its read is kept for the full rule.
local first
do
  local op = string.sub(s, 1, 1)
  p = 2
  local lock, owner, arg = field(), field(), field()
  if p > #s and (op == 'a' or op == 'q' or op == 'r' or op == 'g' or op == 'w') then
    local line
    line, first = plain(op, lock, owner, arg)
    if line then return line .. '\n' end
  end
  p = 1
end
-- <lock>:w of the op being run, when its first read fetched it (wknown): while it is absent
-- nobody is queued (it outlives <lock>:q), so the steps below skip the queue reads and writes.
local wknown, wval = false, nil
local function quiet()
  return wknown and not wval
end
-- The holders of <lock> (v: its value), expired hash entries pruned: st.x / st.xtoken (the
-- exclusive holder), st.h[owner] = {exp, token, mode, permits, limit}, st.n, st.used.
local function load(lock, v)
  local st = { lock = lock, h = {}, n = 0, used = 0, dirty = false, marked = v == MARK, last0 = 0 }
  if v and v ~= MARK then
    local bar = string.find(v, '|', 1, true)
    st.x, st.xtoken = string.sub(v, 1, bar - 1), string.sub(v, bar + 1)
  end
  local hk = lock .. ':h'
  local all = redis.call('HGETALL', hk)
  for i = 1, #all, 2 do
    local e, t, m, k, l = string.match(all[i + 1], '^(%d+) (%d+) (%a) (%d+) (%d+)$')
    e = tonumber(e)
    if e and e > nowMs() then
      st.h[all[i]] = { exp = e, token = t, mode = m, permits = k, limit = l }
      if e > st.last0 then st.last0 = e end
      st.n = st.n + 1
      if m == 'p' then st.used = st.used + tonumber(k) end
    else
      redis.call('HDEL', hk, all[i])
      st.dirty = true
    end
  end
  return st
end

-- Keep <lock>:w set for at least ms (its "f" kept: a fair request is queued).
local function flag(lock, ms)
  wknown = false
  local w = lock .. ':w'
  local f = redis.call('GET', w)
  redis.call('SET', w, f == 'f' and 'f' or '1', 'PX', ms)
end

-- Write back what load() describes: <lock> as the exclusive holder (kept as is), the "|h" mark
-- with the latest hash expiry, or nothing; <lock>:h expiring with its latest entry.
local function store(st)
  local hk = st.lock .. ':h'
  local last = 0
  for _, e in pairs(st.h) do
    if e.exp > last then last = e.exp end
  end
  if st.n > 0 then
    -- <lock>:h and the mark already outlive every entry loaded (every step that writes an entry
    -- extends them to it): nothing to write unless an entry now lives longer.
    if st.marked and not st.x and last <= st.last0 then return end
    local ms = last - nowMs()
    redis.call('PEXPIRE', hk, ms)
    if not st.x then
      redis.call('SET', st.lock, MARK, 'PX', ms)
    elseif redis.call('PTTL', st.lock .. ':w') < ms then
      -- Beside an exclusive holder (alongside): an exclusive try must look at <lock>:h once it expires.
      flag(st.lock, ms)
    end
  else
    if not st.x then redis.call('DEL', st.lock) end
    if st.dirty then redis.call('DEL', hk) end
  end
end

-- Whether ask {mode, permits, limit, alongside} is admitted over the holders and the claims
-- queued ahead (qx: an exclusive one among them, qn: how many, qused: their permits).
local function admits(st, ask, qx, qn, qused)
  if ask.alongside ~= '' and st.x == ask.alongside then return true end
  if ask.mode == 'x' then return not st.x and st.n == 0 and qn == 0 end
  if st.x or qx then return false end
  if ask.mode == 's' then return true end
  return st.used + qused + tonumber(ask.permits) <= tonumber(ask.limit)
end

local function grant(st, owner, ttl, mode, permits, limit)
  local t = nextToken(st.lock)
  if mode == 'x' then
    redis.call('SET', st.lock, owner .. '|' .. t, 'PX', ttl)
    st.x, st.xtoken = owner, t
  else
    local e = nowMs() + tonumber(ttl)
    st.h[owner] = { exp = e, token = t, mode = mode, permits = permits, limit = limit }
    st.n = st.n + 1
    if mode == 'p' then st.used = st.used + tonumber(permits) end
    redis.call('HSET', st.lock .. ':h', owner, int(e) .. ' ' .. t .. ' ' .. mode .. ' ' .. permits .. ' ' .. limit)
  end
  return t
end

local function publish(lock, owner, t)
  local prefix = string.match(lock, '^(.-):{') or lock
  local client = string.match(owner, ':(%x+):%d+$') or owner
  redis.call('PUBLISH', prefix .. ':c:' .. client, owner .. '|' .. t)
end

-- A <lock>:qw entry, parsed: {owner, exp, ttl, mode, permits, limit, since, told, alongside}
-- (since: 0 for a fair request; told: "t" on <since>); nil if it does not parse.
local function parse(owner, info)
  local e, ttl, m, k, l, since, told, along = string.match(info, '^(%d+) (%d+) (%a) (%d+) (%d+) (%d+)(t?) ?(.*)$')
  if not e then return nil end
  return { owner = owner, exp = tonumber(e), ttl = ttl, mode = m, permits = k, limit = l, since = tonumber(since), told = told == 't', alongside = along }
end

local function setEntry(lock, w)
  redis.call('HSET', lock .. ':qw', w.owner, int(w.exp) .. ' ' .. w.ttl .. ' ' .. w.mode .. ' ' .. w.permits .. ' ' .. w.limit .. ' ' .. int(w.since) .. (w.told and 't' or '') .. ' ' .. w.alongside)
end

-- Whether waiter w's turn is due: it asked for fairness, or it has waited HEAD_MS as the head.
local function due(w)
  return w.since == 0 or nowMs() - w.since > HEAD_MS
end

-- ms until head w's turn is due (w not due yet).
local function dueIn(w)
  return HEAD_MS + 1 - (nowMs() - w.since)
end

-- Head w is told and not due yet: cache that in <lock>:d while it lasts (an exclusive head only:
-- the fast paths that read it are the mutex's).
local function markDue(lock, w)
  local ms = dueIn(w) - 1
  if w.mode == 'x' and ms > 0 then redis.call('SET', lock .. ':d', w.owner, 'PX', ms) end
end

-- The live waiters of <lock> in order (expired entries removed), read lazily: ws[i] fetches the
-- queue in chunks (2, then 4, 8, ...) as far as it is read, so that a handover, which usually
-- stops at the second waiter, reads two entries, not the whole queue (each entry read costs
-- about 2.5 us of Lua: reading a 12-waiter queue whole was half of a semaphore step). Entries
-- removed while it is read (dequeue(), its own pruning) move its cursor with them.
local reader
local function waiters(lock)
  if quiet() then return {} end
  local q, qw = lock .. ':q', lock .. ':qw'
  local r = { lock = lock, pos = 0, size = 2, done = false, loaded = {} }
  local ws = {}
  local n = 0
  local function fetch()
    local owners = redis.call('LRANGE', q, r.pos, r.pos + r.size - 1)
    if #owners < r.size then r.done = true end
    r.size = r.size * 2
    if #owners == 0 then return end
    local infos = redis.call('HMGET', qw, unpack(owners))
    for i = 1, #owners do
      local info = infos[i]
      local w = info and parse(owners[i], info)
      if w and w.exp > nowMs() then
        n = n + 1
        rawset(ws, n, w)
        r.loaded[w.owner] = true
        r.pos = r.pos + 1
      else
        redis.call('LREM', q, 0, owners[i])
        if info then redis.call('HDEL', qw, owners[i]) end
        if n == 0 then redis.call('DEL', lock .. ':d') end
      end
    end
  end
  reader = r
  return setmetatable(ws, { __index = function(t, i)
    while not r.done and n < i do fetch() end
    return rawget(t, i)
  end })
end

-- The queue's head alone, when it is live (nil: no queue, or its head is stale: read them all),
-- and whether the queue is empty.
local function liveHead(lock)
  if quiet() then return nil, true end
  local head = redis.call('LINDEX', lock .. ':q', 0)
  if not head then return nil, true end
  local info = redis.call('HGET', lock .. ':qw', head)
  local w = info and parse(head, info)
  if w and w.exp > nowMs() then return w, false end
  return nil, false
end

local function dequeue(lock, owner)
  if quiet() then return end
  if redis.call('HDEL', lock .. ':qw', owner) == 1 then
    redis.call('LREM', lock .. ':q', 0, owner)
    if reader and reader.lock == lock and reader.loaded[owner] then
      reader.loaded[owner] = nil
      reader.pos = reader.pos - 1
    end
    redis.call('DEL', lock .. ':d')
  end
end

-- w became the queue's head (the head before it was handed the key): its wait as the head
-- starts now, and it is told so (woken: its next busy answer names when its turn is due). Woken
-- here, while the key is held by the waiter just handed it, rather than by the first release that
-- leaves the key to bargers: woken then, the head would often take the free key itself before
-- the releaser asks again, a cross-process handoff each time.
local function promote(lock, w)
  if w and w.since ~= 0 then
    w.since, w.told = nowMs(), true
    setEntry(lock, w)
    publish(lock, w.owner, '')
    markDue(lock, w)
  else
    redis.call('DEL', lock .. ':d')
  end
end

-- Bounded barging (see above): whether a key that mode's claim leaves free (or asks for) may skip
-- queue head w for now. The first time in w's turn, w is woken to try by itself.
local function defer(lock, w, mode)
  if not w or w.mode == 's' or w.mode ~= mode or due(w) then return false end
  local f
  if wknown then f = wval else f = redis.call('GET', lock .. ':w') end
  if f == 'f' then return false end
  if not w.told then
    w.told = true
    setEntry(lock, w)
    publish(lock, w.owner, '')
  end
  markDue(lock, w)
  return true
end

-- Hand the key over to the heads of the queue (ws, from waiters()) while the rule admits them;
-- returns the index of the first waiter left in ws, owner -> token of those granted, and whether
-- it was left to bargers instead. (The requester `me` is answered directly, not published to.)
-- mode: the releaser's, when the key may be left to bargers instead (see defer()).
local function handover(st, ws, me, mode)
  local i, given = 1, {}
  if mode and defer(st.lock, ws[1], mode) then return i, given, true end
  while ws[i] and admits(st, ws[i], false, 0, 0) do
    local w = ws[i]
    local t = grant(st, w.owner, w.ttl, w.mode, w.permits, w.limit)
    dequeue(st.lock, w.owner)
    if w.owner ~= me then publish(st.lock, w.owner, t) end
    given[w.owner] = t
    i = i + 1
  end
  if i > 1 then promote(st.lock, ws[i]) end
  return i, given
end

-- ms until the soonest holder's expiry (-1: none known).
local function soonest(st)
  local ms = -1
  if st.x then ms = redis.call('PTTL', st.lock) end
  for _, e in pairs(st.h) do
    local left = e.exp - nowMs()
    if ms < 0 or left < ms then ms = left end
  end
  return ms
end

-- Queue owner, or refresh its entry (keeping its place, its <since> and whether it was told).
-- The entry lives until its next try (within the holders' TTL) plus a margin. Returns the ms the
-- busy answer names: pttl, or sooner when owner heads the queue and its turn is due before
-- (it is then told, see defer()).
local function enqueue(lock, owner, pttl, ask)
  wknown = false
  local q, qw = lock .. ':q', lock .. ':qw'
  local life = (pttl > 0 and pttl or 30000) + 2000
  local old = redis.call('HGET', qw, owner)
  local w = old and parse(owner, old)
  local head
  if old then
    head = redis.call('LINDEX', q, 0) == owner
  else
    head = redis.call('RPUSH', q, owner) == 1
  end
  local since, told = ask.fair == '1' and 0 or nowMs(), false
  if w then since, told = w.since, w.told end
  w = { owner = owner, exp = nowMs() + life, ttl = ask.ttl, mode = ask.mode, permits = ask.permits, limit = ask.limit, since = since, told = told, alongside = ask.alongside }
  local ms = pttl
  if head and not due(w) then
    local d = dueIn(w)
    if ms < 0 or d < ms then ms = d end
    w.told = true
  end
  setEntry(lock, w)
  if head and w.told and not due(w) then markDue(lock, w) end
  -- The two keys (same entries, so they empty together) must outlive every entry. Set to
  -- twice what is needed, so the next waiters' tries mostly find it long enough already:
  -- 2 PEXPIREs per try were ~1.8 commands of a contended cycle. Keys of an abandoned
  -- queue linger one more life at most; entries carry their own expiry either way.
  if ask.fair == '1' or ask.mode == 's' then
    -- No barging while a fair request or a reader is queued (see above).
    local keep = math.max(redis.call('PTTL', qw), 2 * life)
    redis.call('PEXPIRE', qw, keep)
    redis.call('PEXPIRE', q, keep)
    redis.call('SET', lock .. ':w', 'f', 'PX', keep)
  elseif redis.call('PTTL', qw) < life then
    redis.call('PEXPIRE', qw, 2 * life)
    redis.call('PEXPIRE', q, 2 * life)
    flag(lock, 2 * life)
  end
  return ms
end

-- Drop the <lock>:w flag once nothing needs it.
local function unflag(st)
  if quiet() then return end
  if not (st.x and st.n > 0) and redis.call('EXISTS', st.lock .. ':q') == 0 then redis.call('DEL', st.lock .. ':w') end
end

-- Any admission (and an exclusive try that finds waiters or shared holders): one step over the
-- holders and the queue.
local function try(lock, v, owner, ask, queue)
  local st = load(lock, v)
  local mine = st.h[owner]
  if st.x == owner or mine then
    -- Granted to us by a handoff whose message we have not seen (or not yet): confirm, extend.
    dequeue(lock, owner)
    if mine then
      mine.exp = nowMs() + tonumber(ask.ttl)
      redis.call('HSET', lock .. ':h', owner, int(mine.exp) .. ' ' .. mine.token .. ' ' .. mine.mode .. ' ' .. mine.permits .. ' ' .. mine.limit)
      store(st)
      return '1' .. mine.token
    end
    redis.call('PEXPIRE', lock, ask.ttl)
    store(st)
    return '1' .. st.xtoken
  end
  -- Bounded barging: a newcomer that competes with a head not yet due takes what is free first
  -- (decided by the head alone: the rest of a long queue is not read for it).
  local ws
  if ask.fair ~= '1' and admits(st, ask, false, 0, 0) then
    local head, empty = liveHead(lock)
    if head and head.owner ~= owner and defer(lock, head, ask.mode) then
      local t = grant(st, owner, ask.ttl, ask.mode, ask.permits, ask.limit)
      dequeue(lock, owner)
      store(st)
      return '1' .. t
    end
    if empty then ws = {} end
  end
  ws = ws or waiters(lock)
  -- What is free goes to the queue's heads first (a holder expired, or a release left room).
  local first, given = handover(st, ws, owner)
  if given[owner] then
    store(st)
    unflag(st)
    return '1' .. given[owner]
  end
  -- Ahead of us: the holders and the waiters queued before us (read only when the holders alone
  -- would admit us: the waiters ahead can only make it stricter).
  local qx, qn, qused = false, 0, 0
  local fits = admits(st, ask, false, 0, 0)
  local i = first
  while fits and ws[i] do
    local w = ws[i]
    if w.owner == owner then break end
    qn = qn + 1
    if w.mode == 'x' then qx = true elseif w.mode == 'p' then qused = qused + tonumber(w.permits) end
    i = i + 1
  end
  if fits and admits(st, ask, qx, qn, qused) then
    local t = grant(st, owner, ask.ttl, ask.mode, ask.permits, ask.limit)
    dequeue(lock, owner)
    store(st)
    unflag(st)
    return '1' .. t
  end
  local ms = soonest(st)
  if queue then ms = enqueue(lock, owner, ms, ask) end
  store(st)
  return '0' .. int(ms)
end

-- Release owner's hold (exclusive, v being <lock>'s value, or in <lock>:h), then hand over.
-- barge: the key may be left to bargers (a release; not a cancel or a give-back).
local function release(lock, v, owner, barge)
  if owns(v, owner) then
    if redis.call('EXISTS', lock .. ':q', lock .. ':h') == 0 then
      redis.call('DEL', lock, lock .. ':w')
      return '1'
    end
    if redis.call('EXISTS', lock .. ':h') == 0 then
      -- The mutex's handoff: the first live exclusive waiter gets the key in place (what a
      -- release cost before admission modes), or, barging, nobody yet; a shared or permits head
      -- takes the full rule.
      local q, qw = lock .. ':q', lock .. ':qw'
      while true do
        local head = redis.call('LINDEX', q, 0)
        if not head then
          redis.call('DEL', lock)
          return '1'
        end
        local info = redis.call('HGET', qw, head)
        local w = info and parse(head, info)
        if w and w.exp > nowMs() then
          if w.mode ~= 'x' then break end
          if barge and defer(lock, w, 'x') then
            redis.call('DEL', lock)
            return '2'
          end
          redis.call('LPOP', q)
          redis.call('HDEL', qw, head)
          local t = nextToken(lock)
          redis.call('SET', lock, head .. '|' .. t, 'PX', w.ttl)
          publish(lock, head, t)
          local nxt = redis.call('LINDEX', q, 0)
          local ni = nxt and redis.call('HGET', qw, nxt)
          local nw = ni and parse(nxt, ni)
          promote(lock, nw and nw.exp > nowMs() and nw or nil)
          return '1'
        end
        redis.call('LPOP', q)
        if info then redis.call('HDEL', qw, head) end
      end
    end
    local st = load(lock, v)
    st.x = nil
    redis.call('DEL', lock)
    local _, _, left = handover(st, waiters(lock), nil, barge and 'x' or nil)
    store(st)
    unflag(st)
    return left and '2' or '1'
  end
  -- A shared or permits release. Left to bargers (the head alone decides it: a head not due
  -- that competes with this mode; only while <lock>:w is "1": someone queued, none fair), it
  -- needs only our own entry and the head: the other holders' entries are neither read nor
  -- parsed (in a busy semaphore that is most releases: 37-40 -> 28-29 us per EVALSHA, median,
  -- with 4 holders and 12 queued). The mark and <lock>:h keep their expiry (the latest entry's,
  -- perhaps ours: they outlive the holders a while, which costs an exclusive try the full rule,
  -- no more); whichever step reads the holders next prunes the expired ones.
  local hk = lock .. ':h'
  local head -- nil: not read yet; false: read, no live head
  if barge and v == MARK and wknown and wval == '1' then
    local info = redis.call('HGET', hk, owner)
    local e, m
    if info then e, m = string.match(info, '^(%d+) %d+ (%a) ') end
    if e and tonumber(e) > nowMs() then
      head = liveHead(lock) or false
      if head and defer(lock, head, m) then
        redis.call('HDEL', hk, owner)
        if redis.call('HLEN', hk) == 0 then redis.call('DEL', lock) end
        return '2'
      end
    end
  end
  local st = load(lock, v)
  local mine = st.h[owner]
  if not mine then
    store(st)
    return '0'
  end
  if mine.mode == 'p' then st.used = st.used - tonumber(mine.permits) end
  st.h[owner] = nil
  st.n = st.n - 1
  st.dirty = true
  redis.call('HDEL', hk, owner)
  -- Left to bargers (the head alone decides it), or handed over to the queue's heads.
  local left = false
  if head == nil then
    head = barge and liveHead(lock)
    left = head and defer(lock, head, mine.mode)
  end
  if not left then
    local _, _, deferred = handover(st, waiters(lock), nil, barge and mine.mode or nil)
    left = deferred
  end
  store(st)
  unflag(st)
  return left and '2' or '1'
end

local out = {}
while p <= #s do
  local op = string.sub(s, p, p)
  p = p + 1
  local lock, owner, arg = field(), field(), field()
  wknown = false
  reader = nil
  local line, both
  if op == 'a' or op == 'q' or op == 'r' or op == 'g' or op == 'w' then
    if first then both, first = first, nil else line, both = plain(op, lock, owner, arg) end
  end
  if line then
    out[#out + 1] = line
  elseif op == 'a' or op == 'q' then
    local held = both[1]
    wknown, wval = true, both[2]
    local fair = string.byte(arg, -1) == 102 -- "f"
    if fair then arg = string.sub(arg, 1, -2) end
    local ask = { ttl = arg, mode = 'x', permits = '0', limit = '0', fair = fair and '1' or '0', alongside = '' }
    if not held then
      -- Waiters (or a holder expired before it could hand over): barging past an exclusive
      -- head that was told and is not due yet needs the head itself (plain() did the case of
      -- <lock>:d naming it; a free <lock> means no live shared holder: "|h" outlives them);
      -- anything else takes the full rule.
      local mayBarge = both[2] == '1' and not fair
      local barge, w = false, nil
      if mayBarge and not both[3] then
        local head = redis.call('LINDEX', lock .. ':q', 0)
        local info = head and head ~= owner and redis.call('HGET', lock .. ':qw', head)
        w = info and parse(head, info)
        barge = w and w.exp > nowMs() and w.mode == 'x' and w.told and not due(w)
      end
      if barge then
        local t = nextToken(lock)
        redis.call('SET', lock, owner .. '|' .. t, 'PX', arg)
        dequeue(lock, owner)
        if w then markDue(lock, w) end
        out[#out + 1] = '1' .. t
      else
        out[#out + 1] = try(lock, held, owner, ask, op == 'q')
      end
    elseif owns(held, owner) then
      -- Granted to us by a handoff whose message we have not seen (or not yet): confirm.
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1' .. string.sub(held, #owner + 2)
    elseif held == MARK then
      out[#out + 1] = try(lock, held, owner, ask, op == 'q')
    else
      local pttl = redis.call('PTTL', lock)
      if op == 'q' then pttl = enqueue(lock, owner, pttl, ask) end
      out[#out + 1] = '0' .. int(pttl)
    end
  elseif op == 'g' or op == 'w' then
    local ttl, m, k, l, fair, along = string.match(arg, '^(%d+) (%a) (%d+) (%d+) ([01]) ?(.*)$')
    local ask = { ttl = ttl, mode = m, permits = k, limit = l, fair = fair, alongside = along }
    wknown, wval = true, both[2]
    out[#out + 1] = try(lock, both[1], owner, ask, op == 'w')
  elseif op == 'e' then
    local v = redis.call('GET', lock)
    if owns(v, owner) then
      redis.call('PEXPIRE', lock, arg)
      out[#out + 1] = '1'
    else
      local hk = lock .. ':h'
      local info = redis.call('HGET', hk, owner)
      local e, rest
      if info then e, rest = string.match(info, '^(%d+)( .*)$') end
      if e and tonumber(e) > nowMs() then
        local ms = tonumber(arg)
        redis.call('HSET', hk, owner, int(nowMs() + ms) .. rest)
        if redis.call('PTTL', hk) < ms then redis.call('PEXPIRE', hk, ms) end
        if (v == MARK or not v) and redis.call('PTTL', lock) < ms then redis.call('SET', lock, MARK, 'PX', ms) end
        if v and v ~= MARK and redis.call('PTTL', lock .. ':w') < ms then flag(lock, ms) end
        out[#out + 1] = '1'
      else
        out[#out + 1] = '0'
      end
    end
  elseif op == 'r' then
    -- A release, read in one MGET (plain() did the cases of nobody queued, and of a told
    -- exclusive head not due yet with no shared holder).
    wknown, wval = true, both[2]
    out[#out + 1] = release(lock, both[1], owner, true)
  elseif op == 'c' then
    if redis.call('LREM', lock .. ':q', 0, owner) > 0 then redis.call('DEL', lock .. ':d') end
    redis.call('HDEL', lock .. ':qw', owner)
    out[#out + 1] = release(lock, redis.call('GET', lock), owner, false)
  elseif op == 'k' then
    -- Pass on: a releaser that left the key to bargers (its release answered "2") did not ask
    -- for it again; what is free goes to the queue's heads now, due or not. A key someone took
    -- meanwhile is left alone (that holder's release decides).
    local v = redis.call('GET', lock)
    if v and v ~= MARK then
      out[#out + 1] = '0'
    else
      local st = load(lock, v)
      local _, given = handover(st, waiters(lock))
      store(st)
      unflag(st)
      out[#out + 1] = next(given) and '1' or '0'
    end
  elseif op == 'f' then
    local st = load(lock, redis.call('GET', lock))
    local removed = st.n + (st.x and 1 or 0)
    local fence = redis.call('GET', lock .. ':fence') or '0'
    redis.call('DEL', lock, lock .. ':h')
    if removed > 0 then
      st.x, st.h, st.n, st.used, st.dirty = nil, {}, 0, 0, false
      handover(st, waiters(lock))
      store(st)
      unflag(st)
    end
    out[#out + 1] = int(removed) .. ' ' .. fence
  else
    return redis.error_reply('dlock ops: unknown op ' .. tostring(op))
  end
end
out[#out + 1] = ''
return table.concat(out, '\n')
