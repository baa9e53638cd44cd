-- The redis-get workload's work, shared by moonfcgi's app (apps/redis.lua) and OpenResty's
-- (openresty/redis.lua), both through the unmodified lua-resty-redis of Debian's
-- lua-nginx-redis (which Debian installs as the module "nginx.redis"; elsewhere it is
-- "resty.redis"): GET one of 1,000 keys on a pooled connection.
--   get(port) returns the value, or nil and an error.
local found, redis = pcall(require, "nginx.redis")
if not found then
    redis = require "resty.redis"
end

local random = math.random
local _M = {}

function _M.get(port)
    local red = redis:new()
    red:set_timeout(5000)
    local ok, err = red:connect("127.0.0.1", port)
    if not ok then
        return nil, "connect: " .. tostring(err)
    end
    local v, gerr = red:get("key:" .. random(1, 1000))
    if not v then
        return nil, "get: " .. tostring(gerr)
    end
    red:set_keepalive(60000, 64)
    return v
end

return _M
