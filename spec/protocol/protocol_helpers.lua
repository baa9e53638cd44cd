-- What the protocol specs share: raw record plumbing over a connection into the core, and
-- bounded waits. Every loop here has a deadline.
local ffi = require "ffi"
local proto = require "moonfcgi.proto"
local client = require "moonfcgi.client"

pcall(ffi.cdef, "void *mf_proto_spec_signal(int, void *) __asm__(\"signal\");")
pcall(ffi.cdef, "int mf_proto_spec_poll(void *, unsigned long, int) __asm__(\"poll\");")

local H = {}

H.APP = "spec/protocol/apps/proto.lua"

-- The in-process core writes to sockets whose peer a spec closes. The moonfcgi binary
-- ignores SIGPIPE; the library does not (known_failures_spec.lua checks that in a child
-- process). Specs that close a connection under a writing handler ignore it meanwhile, so
-- the rest of the suite can still run and report; restore_sigpipe(previous) undoes it.
function H.ignore_sigpipe()
    return ffi.C.mf_proto_spec_signal(13, ffi.cast("void *", 1))
end

function H.restore_sigpipe(previous)
    if previous ~= nil then
        ffi.C.mf_proto_spec_signal(13, previous)
    end
end

-- Sleeps without running any loop (for specs against the moonfcgi binary).
function H.sleep(seconds)
    ffi.C.mf_proto_spec_poll(nil, 0, math.floor(seconds * 1000))
end

function H.state()
    _G.proto_state = _G.proto_state or { runs = 0 }
    return _G.proto_state
end

-- The whole request as raw bytes: BEGIN, PARAMS, STDIN (and DATA for a filter).
function H.request_bytes(id, opts)
    local o = {}
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    o.id = id
    if o.keep_conn == nil then
        o.keep_conn = true
    end
    return proto.request(o)
end

-- Runs the app's loop until fn() is true or `timeout` passes; returns fn()'s last value.
function H.run_until(app, fn, timeout)
    local deadline = client.now() + (timeout or 2)
    while not fn() do
        if client.now() >= deadline then
            return fn()
        end
        app:run(0.01)
    end
    return true
end

-- Reads records until the END_REQUEST of id (or of every id in the list `ids`). Returns the
-- list of every record read, or nil, err and the list so far.
function H.read_until_end(conn, ids, timeout)
    if type(ids) ~= "table" then
        ids = { ids }
    end
    local left = {}
    local nleft = 0
    for _, id in ipairs(ids) do
        left[id] = true
        nleft = nleft + 1
    end
    local out = {}
    local deadline = client.now() + (timeout or 5)
    while nleft > 0 do
        local rec, err = conn:read_record(math.max(0, deadline - client.now()))
        if not rec then
            return nil, err, out
        end
        out[#out + 1] = rec
        if rec.type == proto.END_REQUEST and left[rec.id] then
            left[rec.id] = nil
            nleft = nleft - 1
        end
    end
    return out
end

-- The records that arrive before the answer to a GET_VALUES sent now. The host handles a
-- connection's records in order and queues its answers in that order, so this is everything
-- it had to say so far, without waiting a fixed time for what should not come. Returns the
-- list (and "closed" or another error if the connection ended first).
function H.read_rest(conn, timeout)
    local out = {}
    local ok, err = conn:send_raw(proto.get_values{ "FCGI_MPXS_CONNS" })
    if not ok then
        return out, err
    end
    local deadline = client.now() + (timeout or 5)
    while true do
        local rec, rerr = conn:read_record(math.max(0, deadline - client.now()))
        if not rec then
            return out, rerr
        end
        if rec.type == proto.GET_VALUES_RESULT and rec.id == 0 then
            return out
        end
        out[#out + 1] = rec
    end
end

-- The records of one id (of one type, if given).
function H.of(records, id, rtype)
    local out = {}
    for _, r in ipairs(records) do
        if r.id == id and (rtype == nil or r.type == rtype) then
            out[#out + 1] = r
        end
    end
    return out
end

-- The concatenated content of the records of id and type.
function H.stream(records, id, rtype)
    local parts = {}
    for _, r in ipairs(H.of(records, id, rtype)) do
        parts[#parts + 1] = r.content
    end
    return table.concat(parts)
end

-- { status, headers, body } of the STDOUT of id in records.
function H.response(records, id)
    local status, headers, body = proto.parse_cgi(H.stream(records, id, proto.STDOUT))
    local ends = H.of(records, id, proto.END_REQUEST)
    local app_status, protocol_status
    if ends[1] then
        app_status, protocol_status = proto.decode_end_request(ends[1].content)
    end
    return { status = status, headers = headers, body = body, ends = #ends,
             app_status = app_status, protocol_status = protocol_status,
             stderr = H.stream(records, id, proto.STDERR) }
end

-- Index of the first record of id of type rtype in records (nil when none).
function H.index_of(records, id, rtype)
    for i, r in ipairs(records) do
        if r.id == id and r.type == rtype then
            return i
        end
    end
    return nil
end

-- Records of id that come after its END_REQUEST.
function H.after_end(records, id)
    local i = H.index_of(records, id, proto.END_REQUEST)
    local out = {}
    if not i then
        return out
    end
    for j = i + 1, #records do
        if records[j].id == id then
            out[#out + 1] = records[j]
        end
    end
    return out
end

-- Reads a whole file, or "" when it cannot.
function H.read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return ""
    end
    local s = f:read("*a")
    f:close()
    return s
end

return H
