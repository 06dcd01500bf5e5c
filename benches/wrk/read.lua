-- GET a random prefilled record (ids r<i> in entity pre-<i % 100>).
local token = os.getenv("SR_TOKEN")
local count = tonumber(os.getenv("SR_PREFILL") or "10000")
wrk.headers["Authorization"] = "Bearer " .. token
math.randomseed(os.time())
request = function()
  local i = math.random(0, count - 1)
  return wrk.format("GET", "/v1/entities/pre-" .. (i % 100) .. "/records/r" .. i)
end
