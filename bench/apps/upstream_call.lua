-- The upstream-wait workload's work, shared by moonfcgi's app (apps/upstream_wait.lua) and
-- OpenResty's (openresty/upstream_wait.lua): one line to bench/upstream.c's mf-upstream on a
-- pooled connection, and its answer, which comes after the upstream's delay (50 ms).
--   call(tcp, port): tcp is the socket constructor (moonfcgi.socket.tcp or ngx.socket.tcp).
local _M = {}

function _M.call(tcp, port)
    local sock = tcp()
    sock:settimeout(10000)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    local _, serr = sock:send("wait\n")
    if serr then
        return nil, "send: " .. serr
    end
    local line, rerr = sock:receive("*l")
    if not line then
        return nil, "receive: " .. tostring(rerr)
    end
    -- Every request in flight holds its own connection: the pool keeps them all.
    sock:setkeepalive(60000, 16384)
    return line .. "\n"
end

return _M
