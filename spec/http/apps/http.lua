-- The app the --http specs drive: each path exercises one thing a browser or client does.
local cjson = require "cjson"
local moonfcgi = require "moonfcgi"

local state = { written = 0, aborted = false, abort_started = false }

local routes = {}

-- Every param, as JSON: the specs compare them with what nginx sends.
routes["/params"] = function(req)
    local t = {}
    for k, v in req:each_param() do
        t[k] = v
    end
    req:set_header("Content-Type", "application/json")
    req:write(cjson.encode(t))
end

-- The body back, read whole.
routes["/echo"] = function(req)
    local body = assert(req:body())
    req:set_header("Content-Type", "application/octet-stream")
    req:write(body)
end

-- The body read in pieces: its size and a checksum.
routes["/count"] = function(req)
    local n, sum = 0, 0
    while true do
        local chunk, err = req:read(4096)
        if not chunk then
            assert(not err, err)
            break
        end
        n = n + #chunk
        for i = 1, #chunk, 997 do
            sum = (sum + chunk:byte(i)) % 65536
        end
    end
    req:write(n, " ", sum)
end

-- n bytes of a repeating pattern, written in 64 KiB pieces.
routes["/big"] = function(req)
    local n = tonumber(req.params.QUERY_STRING:match("n=(%d+)")) or 0
    local piece = ("0123456789abcdef"):rep(4096)
    state.written = 0
    while n > 0 do
        local k = n < #piece and n or #piece
        if not req:write(piece:sub(1, k)) then
            return
        end
        state.written = state.written + k
        n = n - k
    end
end

-- How far /big got: the slow reader spec watches it stop.
routes["/written"] = function(req)
    req:write(state.written)
end

-- Writes and flushes until the client goes away, then records that it saw aborted().
routes["/abort"] = function(req)
    state.aborted, state.abort_started = false, true
    for _ = 1, 400 do
        if req:aborted() then
            break
        end
        req:write(("x"):rep(1024))
        req:flush()
        moonfcgi.sleep(0.01)
    end
    state.aborted = req:aborted()
end

routes["/abort-status"] = function(req)
    req:write(state.abort_started and (state.aborted and "aborted" or "running") or "idle")
end

-- A handler that writes its own CGI header block.
routes["/raw"] = function(req)
    req:raw_write("Status: 201 Made\r\nX-Raw: yes\r\n\r\nraw body")
end

routes["/nobody"] = function(req)
    req:set_status(204)
end

routes["/flushed"] = function(req)
    req:write("first ")
    req:flush()
    req:write("second")
end

routes["/fail"] = function()
    error("on purpose")
end

return {
    respond = function(req)
        local path = req.params.DOCUMENT_URI
        local h = routes[path]
        if not h then
            req:set_status(404)
            req:write("no route for ", path)
            return
        end
        return h(req)
    end,
    authorize = function(req)
        if req:header("Authorization") == "Bearer good" then
            req:set_status(200)
            req:set_variable("USER", "alice")
        else
            req:set_status(403)
            req:write("denied")
        end
    end,
}
