-- What the Apache, lighttpd, Caddy and HAProxy specs need to see from behind each server.
--
--   /slow...   ?seconds=S (default 5): writes and flushes a line every 50 ms until S have
--              passed or the request was aborted, then appends one line to $INTEROP_LOG:
--              "slow id=ID aborted=true|false after=SECONDS"
--   /mpx...    sleeps 0.2 s, then appends "mpx id=ID inflight=N conns=M" to $INTEROP_LOG:
--              N the requests this worker had in flight when the handler started (itself
--              included), M the connections the worker had open at that moment. With one
--              worker, N > M means requests shared a connection: multiplexing.
--   anything else: a summary of the request (status 200, or ?status=CODE), one "name=value"
--              line each:
--              role, id, keep_conn, method, uri, body_length, body (the first 64 bytes),
--              conns (the inode numbers of the worker's open connections, which tell one
--              connection from another), then "param NAME=VALUE" for every param, sorted.
local moonfcgi = require "moonfcgi"
local ffi = require "ffi"

local tonumber, tostring, format = tonumber, tostring, string.format
local sort, concat = table.sort, table.concat
local io_open, os_getenv = io.open, os.getenv

local function note(line)
    local path = os_getenv("INTEROP_LOG")
    if not path then
        return
    end
    local f = io_open(path, "a")
    if f then
        f:write(line, "\n")
        f:close()
    end
end

local function query_arg(req, name)
    return (req:param("QUERY_STRING") or ""):match("[?&]?" .. name .. "=([^&]*)")
end

-- /proc/self/fd through the FFI: a few microseconds per request (reading the kernel's TCP
-- table instead can block the worker for 100 ms on a busy machine). pcall: the app is loaded
-- again on every reload, and a declaration cannot be repeated.
pcall(ffi.cdef, [[
typedef struct interop_dirent {
    uint64_t d_ino; int64_t d_off; unsigned short d_reclen; unsigned char d_type;
    char d_name[256];
} interop_dirent;
]])
pcall(ffi.cdef, "void *opendir(const char *name);")
pcall(ffi.cdef, "interop_dirent *readdir(void *dir);")
pcall(ffi.cdef, "int closedir(void *dir);")
pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t size);")
local C = ffi.C
local link = ffi.new("char[64]")

-- The sockets this process has open, as a set of their inode numbers ("socket:[INODE]").
local function socket_inodes()
    local set = {}
    local dir = C.opendir("/proc/self/fd")
    if dir == nil then
        return set
    end
    while true do
        local e = C.readdir(dir)
        if e == nil then
            break
        end
        local len = C.readlink("/proc/self/fd/" .. ffi.string(e.d_name), link, 64)
        if len > 0 then
            local inode = ffi.string(link, len):match("^socket:%[(%d+)%]$")
            if inode then
                set[inode] = true
            end
        end
    end
    C.closedir(dir)
    return set
end

-- The listening socket and whatever else the worker holds before any web server connects.
local baseline = socket_inodes()

-- The connections this worker has open now: the inodes of its sockets, less the baseline.
local function connections()
    local list = {}
    for inode in pairs(socket_inodes()) do
        if not baseline[inode] then
            list[#list + 1] = inode
        end
    end
    sort(list)
    return list
end

local inflight = 0

local function slow(req)
    local seconds = tonumber(query_arg(req, "seconds")) or 5
    local started = moonfcgi.now()
    req:set_header("Content-Type", "text/plain")
    -- Bounded: at most `seconds`, a line every 50 ms. The lines are what make a web server
    -- notice that its client left: most only look at the client socket when they write to it.
    while moonfcgi.now() - started < seconds and not req:aborted() do
        if not (req:write("waiting\n") and req:flush()) then
            break
        end
        moonfcgi.sleep(0.05)
    end
    note(format("slow id=%d aborted=%s after=%.2f", req.id, tostring(req:aborted()),
        moonfcgi.now() - started))
end

local function mpx(req)
    inflight = inflight + 1
    local conns = #connections()
    local seen = inflight
    moonfcgi.sleep(0.2)
    inflight = inflight - 1
    note(format("mpx id=%d inflight=%d conns=%d", req.id, seen, conns))
    req:set_header("Content-Type", "text/plain")
    req:write("id=", req.id, "\n")
end

local function summary(req)
    local body = req:body() or ""
    local out = {
        "role=" .. req.role,
        "id=" .. req.id,
        "keep_conn=" .. tostring(req.keep_conn),
        "method=" .. tostring(req.method),
        "uri=" .. tostring(req.uri),
        "body_length=" .. #body,
        "body=" .. body:sub(1, 64):gsub("[%c]", "."),
        "conns=" .. concat(connections(), ","),
    }
    local params = {}
    for name, value in req:each_param() do
        params[#params + 1] = "param " .. name .. "=" .. value
    end
    sort(params)
    req:set_status(tonumber(query_arg(req, "status")) or 200)
    req:set_header("Content-Type", "text/plain")
    req:set_header("X-Interop-Id", req.id)
    req:write(concat(out, "\n"), "\n", concat(params, "\n"), "\n")
end

return function(req)
    local path = (req.uri or "/"):match("^[^?]*")
    if path:find("/slow", 1, true) then
        return slow(req)
    elseif path:find("/mpx", 1, true) then
        return mpx(req)
    end
    return summary(req)
end
