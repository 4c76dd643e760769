-- wrk script for benches/peers: requests read from a plan file (the same
-- file `loadgen run --plan` reads): one per line, the path, then optional
-- tab-separated `name: value` headers (wrk's own -H headers are added to
-- every request). Thread k of n sends lines k, k + n, k + 2n…, so no two
-- threads send the same line until the plan wraps around; a run in which
-- one did prints `plan-wrapped`.
--   wrk ... -s benches/plan.lua <url> -- <plan file> <threads>
--
-- init does no more than read the lines: wrk starts each thread as soon as
-- its init is done and its clock once every init is, so a slow init
-- would let the first thread's extra requests count. A request is
-- formatted when first sent and kept.
local threads = {}

function setup(thread)
  thread:set("index", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  lines = {}
  for line in io.lines(args[1]) do
    if line ~= "" then lines[#lines + 1] = line end
  end
  if #lines == 0 then error("no request in " .. args[1]) end
  formatted = {}
  common = "Host: " .. wrk.host .. ":" .. wrk.port .. "\r\n"
  for name, value in pairs(wrk.headers) do
    if name:lower() ~= "host" then common = common .. name .. ": " .. value .. "\r\n" end
  end
  stride = tonumber(args[2])
  position = index
end

local function format(line)
  local tab = line:find("\t", 1, true)
  if not tab then
    return "GET " .. line .. " HTTP/1.1\r\n" .. common .. "\r\n"
  end
  return "GET " .. line:sub(1, tab - 1) .. " HTTP/1.1\r\n" .. common
    .. line:sub(tab + 1):gsub("\t", "\r\n") .. "\r\n\r\n"
end

function request()
  if position >= #lines then wrapped = true end
  local i = position % #lines + 1
  position = position + stride
  local r = formatted[i]
  if not r then
    r = format(lines[i])
    formatted[i] = r
  end
  return r
end

-- A thread that went past the end of the plan repeated its first
-- requests: said on a line of its own, for benches/peers to act on.
function done()
  for _, thread in ipairs(threads) do
    if thread:get("wrapped") then
      print("plan-wrapped")
      return
    end
  end
end
