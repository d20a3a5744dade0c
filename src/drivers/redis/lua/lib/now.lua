-- Server time in ms, read with TIME once per script call (included by scripts/gen-lua.mjs).
local now
local function nowMs()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
