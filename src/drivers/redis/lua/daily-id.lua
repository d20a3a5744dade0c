-- daily-id: hand out ids of a "date prefix + counter" sequence, dated by the server's clock.
-- KEYS[1]  state hash      dlock:{daily:<name>}  fields day (YYYYMMDD), n (last counter of that day);
--                          expires ARGV[4] days after the end of its day
-- ARGV[1]  count (>= 1): how many ids to hand out
-- ARGV[2]  largest counter value of a day (10^digits - 1)
-- ARGV[3]  offset of the business day from UTC, in seconds
-- ARGV[4]  days to keep the state after its day ends
-- returns  {1, day, n}  the ids are day * 10^digits + (n - count + 1 .. n)
--          {0, day, n}  the day's counter would pass ARGV[2]: nothing was handed out
-- The date is computed here, from TIME, so the key cannot carry it (keys must be declared for
-- Cluster): one hash per sequence holds the current day and its counter instead.
local t = redis.call('TIME')
local offset = tonumber(ARGV[3])
local days = math.floor((tonumber(t[1]) + offset) / 86400)
-- Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil inverse).
local z = days + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local d = doy - math.floor((153 * mp + 2) / 5) + 1
local m = mp < 10 and mp + 3 or mp - 9
local y = yoe + era * 400
if m <= 2 then y = y + 1 end
local today = y * 10000 + m * 100 + d
local count = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'day', 'n')
local day = tonumber(state[1])
local n = tonumber(state[2]) or 0
-- A new day restarts the counter. A clock stepped back into an earlier day keeps the later day
-- and its counter: ids never go backwards.
if not day or today > day then
  day = today
  n = 0
end
if n + count > tonumber(ARGV[2]) then return {0, day, n} end
n = n + count
redis.call('HSET', KEYS[1], 'day', day, 'n', n)
redis.call('EXPIREAT', KEYS[1], (days + 1 + tonumber(ARGV[4])) * 86400 - offset)
return {1, day, n}
