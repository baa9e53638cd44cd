-- An app whose answer names the code that produced it: the version string comes from
-- version.lua, a module in the app's own folder that the reload specs rewrite. The body is
-- "VERSION PID", so a spec can tell which code and which worker answered.
local ffi = require "ffi"
local moonfcgi = require "moonfcgi"
local version = require "version"

pcall(ffi.cdef, "int getpid(void);")
local pid = ffi.C.getpid()

return function(req)
    -- BUSY keeps the worker's loop from running for that many seconds (it cannot take a
    -- reload meanwhile); it logs first, so a spec knows it began.
    local busy = tonumber(req:param("BUSY"))
    if busy then
        moonfcgi.log("info", "busy for " .. busy .. " s on " .. version)
        local until_t = os.clock() + busy
        while os.clock() < until_t do
        end
    end
    -- SLEEP keeps the request running across a reload: it must finish on the code it began on.
    local s = tonumber(req:param("SLEEP"))
    if s then
        if req:param("TAG") then
            moonfcgi.log("info", "request " .. req:param("TAG") .. " running on " .. version)
        end
        moonfcgi.sleep(s)
    end
    req:set_header("Content-Type", "text/plain")
    req:write(version, " ", pid)
end
