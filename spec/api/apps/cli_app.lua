-- The app for the command-line specs: SLEEP makes a request wait, LOG writes to the host
-- log, ERROR raises a handler error; every answer says which worker served it.
local moonfcgi = require "moonfcgi"

return function(req)
    local s = tonumber(req:param("SLEEP") or "")
    if s then
        moonfcgi.sleep(s)
    end
    if req:param("LOG") then
        moonfcgi.log("warn", req:param("LOG"))
    end
    if req:param("ERROR") then
        error(req:param("ERROR"))
    end
    req:set_header("Content-Type", "text/plain")
    req:write("worker ", moonfcgi.worker, " ", req:param("TAG") or "")
end
