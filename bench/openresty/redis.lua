-- The redis-get workload on OpenResty: the same module as moonfcgi's app.
local v, err = require("redis_get").get(tonumber(ngx.var.arg_port))
if not v then
    ngx.status = 502
    ngx.say(err)
    return
end
ngx.print(v)
