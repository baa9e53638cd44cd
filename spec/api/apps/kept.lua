-- Hands each request object to the spec (through the box module it registers) and keeps the
-- request in flight: SLEEP waits, WRITE writes large strings to a client that does not read.
local moonfcgi = require "moonfcgi"
local box = require "close_spec_box"

return function(req)
    box[#box + 1] = req
    if req:param("MODE") == "write" then
        for i = 1, 64 do
            -- Built at run time, and large: sent by reference, so pinned until sent.
            req:write(string.rep(string.char(64 + i % 26), 64 * 1024 + i))
        end
    end
    moonfcgi.sleep(600)
end
