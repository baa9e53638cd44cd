-- The json workload's work, shared word for word by moonfcgi's app (apps/json.lua) and
-- OpenResty's (openresty/json.lua): build a list of 50 records, as an app would from a
-- query's rows, and encode it with lua-cjson. PHP's peer (peers/json.php) builds the same.
local cjson = require "cjson"

local encode = cjson.encode
local _M = {}

function _M.body()
    local items = {}
    for i = 1, 50 do
        items[i] = {
            id = i,
            name = "item " .. i,
            price = i * 1.25,
            tags = { "red", "large" },
            active = i % 2 == 0,
        }
    end
    return encode({ count = 50, items = items })
end

return _M
