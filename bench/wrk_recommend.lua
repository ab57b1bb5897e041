-- wrk script for bench/extract.py: POST /v1/recommend with real histories, round robin.
--
--   WRK_BODIES=bodies.jsonl WRK_API_KEY=... wrk -t2 -c32 -d10s -s bench/wrk_recommend.lua URL
--
-- WRK_BODIES holds one JSON request body per line ({"history": [...], "k": 100}). The key and
-- the bodies come from the environment, not the command line, so `ps` does not show the key.
-- `done` prints one line, "WRK_JSON {...}", with the counts the bench reads.

local bodies = {}
local next_body = 0
local threads_made = 0

function setup(thread)
  thread:set("thread_index", threads_made)
  threads_made = threads_made + 1
end

function init(args)
  local path = os.getenv("WRK_BODIES")
  local key = os.getenv("WRK_API_KEY")
  if path == nil or key == nil then
    error("set WRK_BODIES and WRK_API_KEY")
  end
  for line in io.lines(path) do
    if #line > 0 then
      bodies[#bodies + 1] = line
    end
  end
  if #bodies == 0 then
    error("no request bodies in " .. path)
  end
  wrk.method = "POST"
  wrk.path = "/v1/recommend"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  -- Each thread starts at its own place in the list, so threads do not ask in lockstep.
  next_body = ((thread_index or 0) * 7919) % #bodies
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, '
      .. '"latency_p50_us": %d, "latency_p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99)
  ))
end
