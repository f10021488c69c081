-- wrk script for bench/core.py: PUT a fresh random body (WRK_SIZE bytes, default 4096) per
-- request to a unique name <WRK_PREFIX>w<thread>-<n>.bin, so a content-deduplicating server
-- gets no free hits. WRK_AUTH, when set, is sent as the Authorization header.
-- Prints WRK_* lines that core.py parses; non-2xx responses are counted in WRK_BAD.
local prefix = os.getenv("WRK_PREFIX") or "/"
local auth = os.getenv("WRK_AUTH") or ""
local size = tonumber(os.getenv("WRK_SIZE") or "4096")
local threads = {}
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end

function init(args)
  n = 0
  bad = 0
  first_bad = 0
  math.randomseed(os.time() * 7919 + tid * 104729)
  hdrs = { ["Content-Type"] = "application/octet-stream" }
  if auth ~= "" then hdrs["Authorization"] = auth end
  buf = {}
end

-- 4 bytes of randomness per math.random call keeps body generation cheap for wrk's threads.
local function randbody()
  local words = math.floor(size / 4)
  local parts = {}
  local k = 0
  for i = 1, words do
    local r = math.random(0, 4294967295)
    k = k + 1
    buf[k] = string.char(r % 256, math.floor(r / 256) % 256, math.floor(r / 65536) % 256,
                         math.floor(r / 16777216) % 256)
    if k == 256 then
      parts[#parts + 1] = table.concat(buf, "", 1, k)
      k = 0
    end
  end
  if k > 0 then parts[#parts + 1] = table.concat(buf, "", 1, k) end
  local rem = size - words * 4
  if rem > 0 then parts[#parts + 1] = string.rep("x", rem) end
  return table.concat(parts)
end

function request()
  n = n + 1
  return wrk.format("PUT", string.format("%sw%d-%08d.bin", prefix, tid, n), hdrs, randbody())
end

function response(status, headers, body)
  if status ~= 200 and status ~= 201 and status ~= 204 then
    bad = bad + 1
    if first_bad == 0 then first_bad = status end
  end
end

function done(summary, latency, requests)
  local b, fb = 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    if fb == 0 then fb = t:get("first_bad") end
  end
  io.write(string.format("WRK_BAD %d\nWRK_FIRST_BAD %d\n", b, fb))
  io.write(string.format("WRK_P50_US %d\nWRK_P99_US %d\n", latency:percentile(50), latency:percentile(99)))
  io.write(string.format("WRK_REQS %d\nWRK_DURATION_US %d\n", summary.requests, summary.duration))
  local e = summary.errors
  io.write(string.format("WRK_SOCKERR %d\n", e.connect + e.read + e.write + e.timeout))
end
