-- The upstream-wait workload on moonfcgi: ?port=N is mf-upstream's port.
local socket = require "moonfcgi.socket"
local upstream = require "upstream_call"

local tcp, call = socket.tcp, upstream.call

return function(req)
    local port = tonumber((req:param("QUERY_STRING") or ""):match("port=(%d+)"))
    local body, err = call(tcp, port)
    if not body then
        req:set_status(502)
        req:write(err, "\n")
        return
    end
    req:set_header("Content-Type", "text/plain")
    req:write(body)
end
