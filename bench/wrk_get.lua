-- wrk script for bench/dav.py: GET <WRK_PREFIX>f00000.bin .. f<WRK_N-1>.bin round-robin (each
-- thread starts at its own offset). WRK_AUTH, when set, is sent as the Authorization header.
-- Prints WRK_* lines that dav.py parses; non-200 responses are counted in WRK_BAD.
local prefix = os.getenv("WRK_PREFIX") or "/"
local auth = os.getenv("WRK_AUTH") or ""
local count = tonumber(os.getenv("WRK_N") or "2000")
local threads = {}
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end

function init(args)
  i = tid * 997
  bad = 0
  first_bad = 0
  hdrs = {}
  if auth ~= "" then hdrs["Authorization"] = auth end
end

function request()
  i = (i + 1) % count
  return wrk.format("GET", string.format("%sf%05d.bin", prefix, i), hdrs)
end

function response(status, headers, body)
  if status ~= 200 then
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
