-- Times from moonfcgi's log lines ("YYYY-MM-DD HH:MM:SS.mmm [level] ..."), for specs that
-- check how far apart two logged events were by the host's own clock, rather than how long
-- the spec waited (which a loaded machine stretches).
local _M = {}

-- Seconds in the day of each line of log that matches pattern, oldest first.
function _M.stamps(log, pattern)
    local out = {}
    for line in log:gmatch("[^\n]+") do
        if line:find(pattern) then
            local h, m, s = line:match("^%d+%-%d+%-%d+ (%d+):(%d+):([%d.]+) ")
            if h then
                out[#out + 1] = tonumber(h) * 3600 + tonumber(m) * 60 + tonumber(s)
            end
        end
    end
    return out
end

-- Seconds from stamp a to stamp b (across midnight too).
function _M.gap(a, b)
    return (b - a) % 86400
end

-- Waits (polling `output()` every 20 ms, at most `timeout` seconds) until n lines match
-- pattern; returns their stamps (fewer if the time ran out).
function _M.wait_stamps(output, pattern, n, timeout)
    local client = require "moonfcgi.client"
    local ffi = require "ffi"
    pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
    local deadline = client.now() + (timeout or 10)
    while true do
        local st = _M.stamps(output(), pattern)
        if #st >= n or client.now() >= deadline then
            return st
        end
        ffi.C.poll(nil, 0, 20)
    end
end

return _M
