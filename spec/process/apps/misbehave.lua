-- Handlers that hurt their worker, picked by REQUEST_URI, next to a harmless one. The body of
-- every answer that does come is "ok PID", so a spec knows which worker served it.
local ffi = require "ffi"
local moonfcgi = require "moonfcgi"

pcall(ffi.cdef, "int getpid(void);")

local routes = {
    -- Never yields: the worker's loop stops, and only the master can end it. With TAG, logs
    -- first, so a spec knows the worker took it.
    ["/spin"] = function(req)
        if req:param("TAG") then
            moonfcgi.log("info", "spinner " .. req:param("TAG") .. " started")
        end
        while true do
        end
    end,
    ["/exit"] = function()
        os.exit(3)
    end,
    -- A crash in native code, through the FFI: SIGSEGV.
    ["/segv"] = function()
        ffi.cast("int *", 0)[0] = 1
    end,
    -- Stays in flight for SLEEP seconds without blocking the worker; with TAG, logs when it
    -- starts, so a spec knows the request is running.
    ["/sleep"] = function(req)
        if req:param("TAG") then
            moonfcgi.log("info", "sleeper " .. req:param("TAG") .. " started")
        end
        moonfcgi.sleep(tonumber(req:param("SLEEP")) or 1)
    end,
}

return function(req)
    local route = routes[req.uri]
    if route then
        route(req)
    end
    -- ENV names an environment variable whose value (or "unset") comes back in X-Env.
    local env = req:param("ENV")
    if env then
        req:set_header("X-Env", os.getenv(env) or "unset")
    end
    req:set_header("Content-Type", "text/plain")
    req:write("ok ", ffi.C.getpid())
end
