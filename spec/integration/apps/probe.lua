-- What the integration specs need to see from behind a real web server, one path each:
--   /echo      the request body back, with X-Body-Length
--   /params    the size of the params stream as it arrived (name-value pairs encoded as on the
--              wire) and the length of QUERY_STRING, as "total=N query=N count=N"
--   /param     ?name=NAME: the value of the param NAME, or 404
--   /stream    ?n=PIECES&gap=SECONDS: a line per piece, flushed, a pause between pieces
--   /slow      a line every 50 ms for up to 10 s; when a write fails or req:aborted() turns
--              true, appends "aborted LINES" to $PROBE_LOG (else "finished LINES")
--   anything else: "ok" and the method and URI
local moonfcgi = require "moonfcgi"

local tonumber, tostring, format = tonumber, tostring, string.format
local io_open, os_getenv = io.open, os.getenv

local function note(line)
    local path = os_getenv("PROBE_LOG")
    if not path then
        return
    end
    local f = io_open(path, "a")
    if f then
        f:write(line, "\n")
        f:close()
    end
end

-- The bytes one length takes in a name-value pair [FastCGI 1.0, 3.4].
local function len_size(n)
    return n < 128 and 1 or 4
end

local function query_arg(req, name)
    return ("&" .. (req:param("QUERY_STRING") or "")):match("&" .. name .. "=([^&]*)")
end

local routes = {}

function routes.echo(req)
    local body, err = req:body()
    if not body then
        req:set_status(err == "too large" and 413 or 400)
        return req:write(err, "\n")
    end
    req:set_header("Content-Type", "application/octet-stream")
    req:set_header("X-Body-Length", #body)
    req:write(body)
end

function routes.params(req)
    local total, count = 0, 0
    for name, value in req:each_param() do
        total = total + len_size(#name) + len_size(#value) + #name + #value
        count = count + 1
    end
    req:set_header("Content-Type", "text/plain")
    req:write(format("total=%d query=%d count=%d\n", total, #(req:param("QUERY_STRING") or ""),
        count))
end

function routes.param(req)
    local value = req:param(query_arg(req, "name") or "")
    req:set_header("Content-Type", "text/plain")
    if not value then
        req:set_status(404)
        return req:write("no such param\n")
    end
    req:write(value)
end

function routes.stream(req)
    local n = tonumber(query_arg(req, "n")) or 3
    local gap = tonumber(query_arg(req, "gap")) or 0.2
    req:set_header("Content-Type", "text/plain")
    for i = 1, n do
        req:write("piece ", i, "\n")
        req:flush()
        if i < n then
            moonfcgi.sleep(gap)
        end
    end
end

function routes.slow(req)
    req:set_header("Content-Type", "text/plain")
    for i = 1, 200 do
        local ok = req:write("line ", i, "\n")
        if ok then
            ok = req:flush()
        end
        if not ok or req:aborted() then
            note("aborted " .. (i - 1))
            return
        end
        moonfcgi.sleep(0.05)
    end
    note("finished 200")
end

return function(req)
    local name = (req.uri or "/"):match("^/(%w*)")
    local route = routes[name]
    if route then
        return route(req)
    end
    req:set_header("Content-Type", "text/plain")
    req:write("ok ", tostring(req.method), " ", tostring(req.uri), "\n")
end
