-- The json workload on OpenResty (content_by_lua_file): the same module as moonfcgi's app.
local payload = require "json_payload"

ngx.header["Content-Type"] = "application/json"
ngx.print(payload.body())
