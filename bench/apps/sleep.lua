-- The concurrency workload: every request sleeps 10 ms (?s=SECONDS overrides) on the event
-- loop, then greets. Thousands of them wait at once in one worker.
local moonfcgi = require "moonfcgi"
local tonumber, sleep = tonumber, moonfcgi.sleep

return function(req)
    local s = tonumber((req:param("QUERY_STRING") or ""):match("s=([%d.]+)")) or 0.01
    sleep(s)
    req:set_header("Content-Type", "text/plain")
    req:write("Hello, world!\n")
end
