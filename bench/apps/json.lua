-- The json workload on moonfcgi: apps/json_payload.lua's 50 records encoded per request.
local payload = require "json_payload"

local body = payload.body

return function(req)
    req:set_header("Content-Type", "application/json")
    req:write(body())
end
