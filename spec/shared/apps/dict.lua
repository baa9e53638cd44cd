-- A handler that reaches the dictionaries through moonfcgi.shared, as apps do.
local moonfcgi = require "moonfcgi"

-- Taken at load time, as apps often do at their top level.
local cache = moonfcgi.shared.cache

return function(req)
    local op = req:param("OP")
    if op == "incr" then
        req:write(tostring(moonfcgi.shared.cache:incr("hits", 1, 0)))
    elseif op == "same" then
        req:write(tostring(cache == moonfcgi.shared.cache))
    elseif op == "ngx" then
        req:write(tostring(ngx.shared.cache == cache))
    elseif op == "missing" then
        req:write(tostring(moonfcgi.shared.nosuch))
    else
        req:write(tostring(cache:get(req:param("KEY") or "k")))
    end
end
