-- Writes large strings built at run time (so they are not interned constants), drops them
-- and collects garbage while the connection still sends them.
local moonfcgi = require "moonfcgi"

return function(req)
    local n = tonumber(req:param("PIECES") or "4")
    for i = 1, n do
        local piece = string.rep(string.char(64 + i), 200 * 1024 + i)
        req:write(piece)
        piece = nil
        collectgarbage("collect")
    end
    moonfcgi.sleep(0.05)
    collectgarbage("collect")
end
