-- wrk script: POST pre-made signed SOAP bodies (one per line of the file named by the first
-- argument after --) in turn; prints "accepted N" (answers 200) per thread at the end.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  position, accepted = 0, 0
end

function request()
  position = position % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/soap+xml; charset=utf-8"}, bodies[position])
end

function response(status, headers, body)
  if status == 200 then
    accepted = accepted + 1
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    print("accepted " .. thread:get("accepted"))
  end
end
