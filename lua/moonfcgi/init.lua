-- The moonfcgi module (docs/api.md, "The `moonfcgi` module"), in the host and in specs.
local runtime = require "moonfcgi.runtime"

local select, tostring, type, error = select, tostring, type, error
local concat = table.concat

local _M = { _VERSION = require("moonfcgi.core").C.mf_ffi_version() }

local LEVELS = { error = true, warn = true, info = true, debug = true }

function _M.sleep(seconds)
    if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
        error("bad argument #1 to 'sleep' (non-negative number expected)", 2)
    end
    return runtime.sleep(seconds)
end

function _M.now()
    return runtime.now()
end

function _M.log(level, ...)
    if not LEVELS[level] then
        error("bad argument #1 to 'log' (error, warn, info or debug expected)", 2)
    end
    local n = select("#", ...)
    local parts = { ... }
    for i = 1, n do
        parts[i] = tostring(parts[i])
    end
    runtime.log(level, concat(parts, " ", 1, n))
end

-- moonfcgi.shared.NAME: the dictionaries of --shared (in moonfcgi.test, those test.load
-- declared for the app that runs). The ngx layer's ngx.shared is this same table.
_M.shared = setmetatable({}, {
    __index = function(_, name)
        return runtime.shared()[name]
    end,
    __newindex = function()
        error("moonfcgi.shared is read-only: declare dictionaries with --shared NAME:SIZE", 2)
    end,
})

return setmetatable(_M, {
    __index = function(_, k)
        if k == "worker" then
            return runtime.worker_number()
        end
    end,
})
