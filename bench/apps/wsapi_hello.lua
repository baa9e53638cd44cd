-- The hello world for the wsapi-fcgi peer (lua-wsapi-fcgi), which bench/run.sh starts with
-- spawn-fcgi when wsapi.fcgi is installed; wsapi.fcgi loads the SCRIPT_FILENAME it is sent.
-- Not a moonfcgi app. Written to WSAPI 1.6's interface, but not run where it was written
-- (wsapi-fcgi was not installed there).
local coroutine = coroutine

local function run(wsapi_env) -- luacheck: no unused args
    local function body()
        coroutine.yield("Hello, world!\n")
    end
    return 200, { ["Content-Type"] = "text/plain" }, coroutine.wrap(body)
end

return { run = run }
