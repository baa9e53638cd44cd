-- The redis-get workload on moonfcgi: ?port=N is the bench's redis-server. lua-resty-redis
-- comes from the unpacked Debian package, whose folder run.sh passes in MF_RESTY_LUA.
local dir = os.getenv("MF_RESTY_LUA")
if dir then
    package.path = dir .. "/?.lua;" .. package.path
end
local redis_get = require "redis_get"

local get = redis_get.get

return function(req)
    local port = tonumber((req:param("QUERY_STRING") or ""):match("port=(%d+)"))
    local v, err = get(port)
    if not v then
        req:set_status(502)
        req:write(err, "\n")
        return
    end
    req:set_header("Content-Type", "text/plain")
    req:write(v)
end
