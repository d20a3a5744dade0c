-- key-state: every holder of a lock and the number of its live waiters, without changing anything
-- (see ops.lua for the keys).
-- KEYS[1]  lock key
-- returns  {exclusive "<owner>|<token>" or "", its pttl, live waiters, then for each live shared
--          or permit holder: owner, "<remaining ms> <token> <s|p> <permits> <limit>"}
local lock = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', lock)
local out = {'', -2, 0}
if v and string.sub(v, 1, 2) ~= '|h' then -- '|h' or Redlock's '|h|w': only shared holders
  out[1] = v
  out[2] = redis.call('PTTL', lock)
end
local qw = redis.call('HVALS', lock .. ':qw')
for i = 1, #qw do
  local e = tonumber(string.match(qw[i], '^(%d+)'))
  if e and e > now then out[3] = out[3] + 1 end
end
local h = redis.call('HGETALL', lock .. ':h')
for i = 1, #h, 2 do
  local e, rest = string.match(h[i + 1], '^(%d+)( .*)$')
  if e and tonumber(e) > now then
    out[#out + 1] = h[i]
    out[#out + 1] = string.format('%d', tonumber(e) - now) .. rest
  end
end
return out
