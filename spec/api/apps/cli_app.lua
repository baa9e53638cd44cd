-- The app for the command-line specs: LOG writes to the host log (first, so that a spec can
-- wait for that line to know the handler runs), SLEEP makes a request wait, ERROR raises a
-- handler error; every answer says which worker served it.
local moonfcgi = require "moonfcgi"

return function(req)
    if req:param("LOG") then
        moonfcgi.log("warn", req:param("LOG"))
    end
    local s = tonumber(req:param("SLEEP") or "")
    if s then
        moonfcgi.sleep(s)
    end
    if req:param("ERROR") then
        error(req:param("ERROR"))
    end
    req:set_header("Content-Type", "text/plain")
    req:write("worker ", moonfcgi.worker, " ", req:param("TAG") or "")
end
