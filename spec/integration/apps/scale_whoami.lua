-- One of several moonfcgi hosts behind one nginx upstream (spec/integration/scaleout_spec.lua):
-- every answer names the host that gave it, so a spec can tell how nginx spread the requests.
--   X-Instance: INSTANCE-PID, INSTANCE from the environment (each host gets its own), PID the
--               master's, which the worker inherits as its parent: a host started again on
--               the same port answers with a new PID
--   /slow      the same after 0.2 s of moonfcgi.sleep (?s=SECONDS: that long instead), so
--              that requests are in flight when a host is stopped or killed; when
--              $SCALE_STARTED names a file, appends "INSTANCE-PID URI" to it first, so that a
--              spec knows what is in flight where
--   anything else: at once
-- The body is the same INSTANCE-PID and a newline.
local moonfcgi = require "moonfcgi"
local ffi = require "ffi"

pcall(ffi.cdef, "int getppid(void);")

local instance = (os.getenv("INSTANCE") or "?") .. "-" .. ffi.C.getppid()
local started = os.getenv("SCALE_STARTED")

local function note_start(uri)
    local f = started and io.open(started, "a")
    if f then
        f:write(instance, " ", uri, "\n")
        f:close()
    end
end

return function(req)
    local uri = req.uri or ""
    if uri:match("^/slow") then
        note_start(uri)
        moonfcgi.sleep(tonumber(uri:match("[?&]s=([%d.]+)")) or 0.2)
    end
    req:set_header("Content-Type", "text/plain")
    req:set_header("X-Instance", instance)
    req:write(instance, "\n")
end
