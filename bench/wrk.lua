-- wrk script for bench/run.sh. Parameters come from the environment (read at load time, so
-- wrk sees `delay` when a rate is asked for):
--   BENCH_PATH      request path (POST)
--   BENCH_BODY      file holding the JSON body
--   BENCH_TOKENS    file with one JWT per line; requests cycle through them in order
--   BENCH_DELAY_MS  if > 0: each connection waits a random 0..2*BENCH_DELAY_MS ms between
--                   requests (a paced, moderate rate: about connections / BENCH_DELAY_MS per ms)
--   BENCH_ONCE      if 1: stop each thread after one pass over the tokens (cold users stay cold)
--   BENCH_OUT       file the summary is appended to, as one JSON line
local path = os.getenv("BENCH_PATH") or "/api/v3.1/tools/execute/GITHUB_CREATE_AN_ISSUE"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local once = os.getenv("BENCH_ONCE") == "1"

local function slurp(name)
  local f = assert(io.open(name, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local requests = {}
local n, i = 0, 0

function init(args)
  local body = slurp(os.getenv("BENCH_BODY"))
  for tok in io.lines(os.getenv("BENCH_TOKENS")) do
    if #tok > 0 then
      n = n + 1
      requests[n] = wrk.format("POST", path, {
        ["Host"] = "127.0.0.1",
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. tok,
      }, body)
    end
  end
  math.randomseed(os.time())
end

function request()
  i = i + 1
  if i > n then
    if once then wrk.thread:stop() end
    i = 1
  end
  return requests[i]
end

if delay_ms > 0 then
  function delay()
    return math.random(0, 2 * delay_ms)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    '{"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout)
  print("BENCH_RESULT " .. line)
  local out = os.getenv("BENCH_OUT")
  if out then
    local f = assert(io.open(out, "a"))
    f:write(line, "\n")
    f:close()
  end
end
