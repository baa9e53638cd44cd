-- The upstream-wait workload on OpenResty: the same module as moonfcgi's app.
local upstream = require "upstream_call"

local body, err = upstream.call(ngx.socket.tcp, tonumber(ngx.var.arg_port))
if not body then
    ngx.status = 502
    ngx.say(err)
    return
end
ngx.print(body)
