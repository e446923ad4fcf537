-- wrk script of verifier_http_rps: replays pre-generated, single-use signed requests.
-- args: <requests file> <threads> <path>. Each line: terminal \t timestamp \t signature \t body.
-- Thread k sends lines k, k+T, k+2T, ... once each; after its share is used up it repeats
-- its last request (then answered "retry"), which is counted as "other" and makes the
-- benchmark retry with a larger pool.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads, target = args[1], tonumber(args[2]), args[3]
  reqs = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == id then
      local term, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", target, {
        ["Content-Type"] = "application/json",
        ["X-StarCard-Terminal"] = term,
        ["X-StarCard-Timestamp"] = ts,
        ["X-StarCard-Signature"] = sig,
      }, body)
    end
    i = i + 1
  end
  sent, valid, other = 0, 0, 0
end

function request()
  sent = sent + 1
  if sent > #reqs then
    return reqs[#reqs]
  end
  return reqs[sent]
end

function response(status, headers, body)
  if status == 200 and body:find('"state":"valid"', 1, true) then
    valid = valid + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local v, o = 0, 0
  for _, t in ipairs(threads) do
    v = v + t:get("valid")
    o = o + t:get("other")
  end
  io.write(string.format("RESULT %d %d %d %d %.1f\n", v, o, summary.duration,
    summary.requests, latency:percentile(50)))
end
