-- POST one ~1 KiB JSON record per request, spread over 1000 entities.
local token = os.getenv("SR_TOKEN")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"records":[{"data":{"payload":"' .. string.rep("x", 990) .. '","n":1}}]}'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/entities/bench-" .. (n % 1000) .. "/records")
end
