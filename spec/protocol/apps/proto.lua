-- The app behind spec/protocol: one handler per role, whose behaviour the request chooses
-- with the ACTION param. What a handler saw (aborted, what read and write returned, how far
-- it got) goes to the shared table _G.proto_state[TAG], so a spec in the same Lua state can
-- look at it; run by the moonfcgi binary, it goes to the host log instead.
local moonfcgi = require "moonfcgi"

local S = _G.proto_state or { runs = 0 }
_G.proto_state = S

local rep, tostring, tonumber = string.rep, tostring, tonumber

-- The note of one request, created when its handler starts.
local function note(req)
    local tag = req:param("TAG") or tostring(req.id)
    local n = { started = true }
    S[tag] = n
    return n, tag
end

-- Bytes i .. i + n - 1 of an endless, position-dependent pattern: a response that lost,
-- repeated or reordered a piece cannot match it.
local function pattern(i, n)
    local parts = {}
    local pos = i
    while pos < i + n do
        local line = string.format("%09d\n", pos - pos % 10)
        local off = pos % 10
        local take = math.min(10 - off, i + n - pos)
        parts[#parts + 1] = line:sub(off + 1, off + take)
        pos = pos + take
    end
    return table.concat(parts)
end
S.pattern = pattern

local actions = {}

-- TAG ":" then the body, so that multiplexed requests are told apart.
function actions.echo(req)
    local body = req:body()
    req:set_header("Content-Type", "text/plain")
    req:write(req:param("TAG") or "", ":", body)
end

-- The params in their order of arrival, one "name=value" a line.
function actions.params(req)
    req:set_header("Content-Type", "text/plain")
    for k, v in req:each_param() do
        req:write(k, "=", v, "\n")
    end
end

-- Writes SIZE bytes of the pattern in pieces of CHUNK bytes.
function actions.big(req)
    local size = tonumber(req:param("SIZE"))
    local chunk = tonumber(req:param("CHUNK") or 65536)
    req:set_header("Content-Type", "application/octet-stream")
    local pos = 0
    while pos < size do
        local n = math.min(chunk, size - pos)
        assert(req:write(pattern(pos, n)))
        pos = pos + n
    end
end

-- Writes SIZE bytes of "x" in 64 KiB pieces, counting them in n.written; stops at the first
-- failed write and keeps what it returned.
function actions.flood(req)
    local n = note(req)
    local size = tonumber(req:param("SIZE"))
    local piece = rep("x", 65536)
    n.written = 0
    while n.written < size do
        local ok, err = req:write(piece)
        if not ok then
            n.write_result, n.write_err = ok, err
            break
        end
        n.written = n.written + #piece
    end
    n.aborted = req:aborted()
    n.done = true
end

-- Reads the body with read() until it ends or fails; records every result. With FIRST,
-- writes and flushes that first: a client that sees it knows the request is in flight.
function actions.read(req)
    local n = note(req)
    local first = req:param("FIRST")
    if first then
        req:write(first)
        req:flush()
    end
    n.chunks = 0
    n.bytes = 0
    local parts = {}
    for _ = 1, 100000 do
        local s, err = req:read(tonumber(req:param("N")))
        if not s then
            n.read_result, n.read_err = s, err
            break
        end
        n.chunks = n.chunks + 1
        n.bytes = n.bytes + #s
        parts[#parts + 1] = s
    end
    n.aborted = req:aborted()
    n.write_result, n.write_err = req:write(table.concat(parts))
    n.done = true
end

-- Sleeps SECONDS, then writes "slept" (after writing and flushing FIRST, if given).
function actions.sleep(req)
    local n = note(req)
    local first = req:param("FIRST")
    if first then
        req:write(first)
        req:flush()
    end
    moonfcgi.sleep(tonumber(req:param("SECONDS") or "0.2"))
    n.aborted = req:aborted()
    n.write_result, n.write_err = req:write("slept")
    n.read_result, n.read_err = req:read()
    n.done = true
end

-- Waits (up to about 10 s) until the request is aborted, noting that it was: for specs that
-- need a handler still running when something happens to its connection.
local function hold(req, n)
    n = n or note(req)
    for _ = 1, 1000 do
        if req:aborted() then
            break
        end
        moonfcgi.sleep(0.01)
    end
    n.aborted = req:aborted()
    n.done = true
end
actions.hold = hold

-- A line to FCGI_STDERR, then "logged".
function actions.log(req)
    req:log(req:param("MSG") or "a log line")
    req:write("logged")
end

-- Counts how often a handler ran at all (to prove one did not).
local function respond(req)
    S.runs = S.runs + 1
    local action = actions[req:param("ACTION") or "echo"]
    if not action then
        req:set_status(404)
        return 0
    end
    action(req)
    return tonumber(req:param("APP_STATUS") or 0)
end

return {
    respond = respond,
    -- Grants when AUTH is "yes"; reports the role it ran in.
    authorize = function(req)
        S.runs = S.runs + 1
        if req:param("AUTH") == "hold" then
            return hold(req)
        end
        if req:param("AUTH") == "yes" then
            req:set_status(200)
            req:set_variable("ROLE", req.role)
        else
            req:set_status(403)
            req:write("denied")
        end
    end,
    -- STDIN then the DATA stream, joined by "|".
    filter = function(req)
        S.runs = S.runs + 1
        local n = req:param("ACTION") == "hold" and note(req)
        local body = req:body()
        local data = req:data()
        if n then
            return hold(req, n)
        end
        req:set_header("Content-Type", "text/plain")
        req:write(req.role, ":", body, "|", data, "|", req:param("FCGI_DATA_LENGTH") or "")
    end,
}
