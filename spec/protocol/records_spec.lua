-- The record layer of docs/protocol.md "Records": how the core reads what a web server sends, and
-- the records it sends back. Driven through the in-process core with raw bytes.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local H = require "protocol_helpers"

local rep, char = string.rep, string.char

-- A record with arbitrary padding bytes and reserved byte.
local function rec(rtype, id, content, padlen, padbyte, reserved)
    content = content or ""
    padlen = padlen or 0
    return char(1, rtype, math.floor(id / 256), id % 256, math.floor(#content / 256),
                #content % 256, padlen, reserved or 0) .. content .. rep(padbyte or "\0", padlen)
end

local function begin_body(role, flags)
    return char(math.floor(role / 256), role % 256, flags or 1, 0, 0, 0, 0, 0)
end

describe("records", function()
    local app

    before_each(function()
        app = test.load(H.APP, { timeout = 5 })
    end)

    after_each(function()
        app:close()
    end)

    local function roundtrip(bytes, id, timeout)
        local conn = app:connect()
        assert(conn:send_raw(bytes))
        local recs, err = H.read_until_end(conn, id, timeout or 5)
        assert(recs, err)
        conn:close()
        return H.response(recs, id), recs
    end

    it("reads a whole request written one byte at a time", function()
        local bytes = H.request_bytes(1, { params = { ACTION = "echo", TAG = "bytes" },
                                           stdin = "one byte at a time" })
        local conn = app:connect()
        for i = 1, #bytes do
            assert(conn:send_raw(bytes:sub(i, i)))
            app:step(0)
        end
        local recs = assert(H.read_until_end(conn, 1))
        local res = H.response(recs, 1)
        assert.equal(200, res.status)
        assert.equal("bytes:one byte at a time", res.body)
        assert.equal(1, res.ends)
        conn:close()
    end)

    it("reads a request split at every possible point in two writes", function()
        local bytes = H.request_bytes(1, { params = { ACTION = "echo", TAG = "s" }, stdin = "xy" })
        local conn = app:connect()
        for cut = 1, #bytes - 1 do
            assert(conn:send_raw(bytes:sub(1, cut)))
            app:step(0)
            assert(conn:send_raw(bytes:sub(cut + 1)))
            local recs = assert(H.read_until_end(conn, 1))
            assert.equal("s:xy", H.response(recs, 1).body, "split at " .. cut)
        end
        conn:close()
    end)

    it("ignores padding and the reserved byte whatever they hold, on every record", function()
        local params = proto.encode_params({ ACTION = "echo", TAG = "pad" })
        local bytes = rec(1, 1, begin_body(1, 1), 7, "\255", 0xAA)
            .. rec(4, 1, params, 5, "\1", 0xFF)
            .. rec(4, 1, "", 7, "\1", 0x55)           -- empty terminator, garbage padding
            .. rec(5, 1, "body", 255, "\7", 0x01)
            .. rec(5, 1, "", 3, "\1", 0xFE)
        local res = roundtrip(bytes, 1)
        assert.equal(200, res.status)
        assert.equal("pad:body", res.body)
    end)

    it("ignores the padding of an unknown management record", function()
        local conn = app:connect()
        assert(conn:send_raw(rec(200, 0, "abc", 255, "\1", 0x77)
            .. H.request_bytes(1, { params = { TAG = "u" }, stdin = "ok" })))
        local recs = assert(H.read_until_end(conn, 1))
        local unknown = H.of(recs, 0, proto.UNKNOWN_TYPE)
        assert.equal(1, #unknown)
        assert.equal(200, unknown[1].content:byte(1))
        assert.equal("u:ok", H.response(recs, 1).body)
        conn:close()
    end)

    it("accepts a params record of 65535 content bytes with 255 bytes of padding", function()
        -- 14 bytes for ACTION=params, 8 + L for BIG: 65535 in all.
        local big = rep("b", 65535 - 14 - 8)
        local content = proto.encode_params({ { "ACTION", "params" }, { "BIG", big } })
        assert.equal(65535, #content)
        local bytes = proto.begin_request(1, "responder", true)
            .. proto.record(proto.PARAMS, 1, content, 255)
            .. proto.record(proto.PARAMS, 1, "", 0)
            .. proto.stream(proto.STDIN, 1, "")
        local res = roundtrip(bytes, 1)
        assert.equal(200, res.status)
        assert.equal("ACTION=params\nBIG=" .. big .. "\n", res.body)
    end)

    it("accepts stdin records of 65535 content bytes with 255 bytes of padding", function()
        local body = rep("s", 65535)
        local bytes = proto.begin_request(1, "responder", true)
            .. proto.stream(proto.PARAMS, 1, proto.encode_params({ TAG = "t" }))
            .. proto.record(proto.STDIN, 1, body, 255)
            .. proto.record(proto.STDIN, 1, body, 255)
            .. proto.record(proto.STDIN, 1, "", 255)
        local res = roundtrip(bytes, 1)
        assert.equal("t:" .. body .. body, res.body)
    end)

    it("serves a request with no params and an empty body (records of 0 content)", function()
        local bytes = proto.begin_request(1, "responder", true)
            .. proto.record(proto.PARAMS, 1, "")
            .. proto.record(proto.STDIN, 1, "")
        local res = roundtrip(bytes, 1)
        assert.equal(200, res.status)
        assert.equal(":", res.body)
    end)

    it("answers an empty GET_VALUES with an empty GET_VALUES_RESULT", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.record(proto.GET_VALUES, 0, "")))
        local r = assert(conn:read_record(2))
        assert.equal(proto.GET_VALUES_RESULT, r.type)
        assert.equal(0, r.id)
        assert.equal("", r.content)
        conn:close()
    end)

    describe("params", function()
        it("joins pairs that straddle record boundaries (one byte a record)", function()
            local res = roundtrip(H.request_bytes(1, {
                params = { { "ACTION", "params" }, { "NAME", rep("v", 300) }, { "X", "" } },
                params_chunk = 1 }), 1)
            assert.equal("ACTION=params\nNAME=" .. rep("v", 300) .. "\nX=\n", res.body)
        end)

        it("joins a 4-byte length split across records", function()
            local content = proto.encode_params({ { "ACTION", "params" },
                                                  { "LONG", rep("l", 200) } })
            -- ACTION pair: 14 bytes; then LONG's lengths: 1 byte (4), 4 bytes (200).
            local cut = 14 + 1 + 2
            local bytes = proto.begin_request(1, "responder", true)
                .. proto.record(proto.PARAMS, 1, content:sub(1, cut))
                .. proto.record(proto.PARAMS, 1, content:sub(cut + 1))
                .. proto.record(proto.PARAMS, 1, "")
                .. proto.stream(proto.STDIN, 1, "")
            local res = roundtrip(bytes, 1)
            assert.equal("ACTION=params\nLONG=" .. rep("l", 200) .. "\n", res.body)
        end)

        it("accepts 4-byte encodings of small lengths", function()
            local function len4(n)
                return char(0x80, 0, 0, n)
            end
            local content = len4(6) .. len4(6) .. "ACTIONparams"
                .. "\1" .. len4(1) .. "Ab"
                .. len4(2) .. "\0" .. "EM"
            local bytes = proto.begin_request(1, "responder", true)
                .. proto.stream(proto.PARAMS, 1, content)
                .. proto.stream(proto.STDIN, 1, "")
            local res = roundtrip(bytes, 1)
            assert.equal(200, res.status)
            assert.equal("ACTION=params\nA=b\nEM=\n", res.body)
        end)
    end)

    describe("stdin", function()
        local body = rep("0123456789", 100)

        it("is the concatenation of many records", function()
            local res = roundtrip(H.request_bytes(1, { params = { TAG = "m" }, stdin = body,
                                                       stdin_chunk = 1 }), 1)
            assert.equal("m:" .. body, res.body)
        end)

        it("may come in one record", function()
            local res = roundtrip(H.request_bytes(1, { params = { TAG = "o" }, stdin = body }), 1)
            assert.equal("o:" .. body, res.body)
        end)

        it("may be empty", function()
            local res = roundtrip(H.request_bytes(1, { params = { TAG = "e" }, stdin = "" }), 1)
            assert.equal("e:", res.body)
        end)
    end)

    describe("roles", function()
        it("serves the responder role", function()
            local res = app:request{ role = "responder", params = { TAG = "r" }, stdin = "in" }
            assert.equal(200, res.status)
            assert.equal("r:in", res.body)
            assert.equal("complete", res.protocol_status)
        end)

        it("serves the authorizer role with an empty stdin (lighttpd)", function()
            local res = app:request{ role = "authorizer", params = { AUTH = "yes" }, stdin = "" }
            assert.equal(200, res.status)
            assert.equal("authorizer", res.headers["variable-role"])
        end)

        it("serves the authorizer role with no stdin at all (Apache mod_authnz_fcgi)", function()
            local conn = app:connect()
            assert(conn:send_raw(proto.begin_request(1, "authorizer", true)
                .. proto.stream(proto.PARAMS, 1, proto.encode_params({ AUTH = "no" }))))
            local recs = assert(H.read_until_end(conn, 1))
            local res = H.response(recs, 1)
            assert.equal(403, res.status)
            assert.equal("denied", res.body)
            conn:close()
        end)

        it("serves the filter role with FCGI_DATA", function()
            local data = rep("d", 70000)
            local res = app:request{ role = "filter", params = {}, stdin = "in", data = data }
            assert.equal(200, res.status)
            assert.equal("filter:in|" .. data .. "|70000", res.body)
        end)

        it("reads FCGI_DATA sent as many records", function()
            local res = app:request{ role = "filter", params = {}, stdin = { "a", "b" },
                                     data = rep("z", 100), data_chunk = 7 }
            assert.equal("filter:ab|" .. rep("z", 100) .. "|100", res.body)
        end)
    end)

    describe("output", function()
        it("sends exactly one END_REQUEST per request", function()
            local conn = app:connect()
            local bytes = {}
            for id = 1, 10 do
                bytes[#bytes + 1] = H.request_bytes(id, { params = { TAG = tostring(id) },
                                                          stdin = "b" })
            end
            assert(conn:send_raw(table.concat(bytes)))
            local ids = {}
            for id = 1, 10 do
                ids[id] = id
            end
            local recs = assert(H.read_until_end(conn, ids))
            local more = H.read_rest(conn)
            for _, r in ipairs(more) do
                recs[#recs + 1] = r
            end
            for id = 1, 10 do
                assert.equal(1, #H.of(recs, id, proto.END_REQUEST), "id " .. id)
                assert.equal(0, #H.after_end(recs, id), "id " .. id)
            end
            conn:close()
        end)

        it("frames a 1 MiB response in STDOUT records of at most 65528 bytes, "
            .. "content + padding at most 65535", function()
            local size = 1024 * 1024
            local conn = app:connect()
            assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "big",
                SIZE = tostring(size), CHUNK = "100000" } })))
            local recs = assert(H.read_until_end(conn, 1))
            local stdout = H.of(recs, 1, proto.STDOUT)
            assert.is_true(#stdout >= 17)
            for i, r in ipairs(stdout) do
                assert.is_true(#r.content <= 65528, "record " .. i .. ": " .. #r.content)
                assert.is_true(#r.content + r.padding_len <= 65535, "record " .. i)
            end
            assert.equal("", stdout[#stdout].content)
            local res = H.response(recs, 1)
            assert.equal(size, #res.body)
            assert.equal(H.state().pattern(0, size), res.body)
            conn:close()
        end)

        it("sends req:log lines as FCGI_STDERR", function()
            local res = app:request{ params = { ACTION = "log", MSG = "to the error log" } }
            assert.equal("logged", res.body)
            assert.equal("to the error log\n", res.stderr)
        end)
    end)

    describe("FCGI_KEEP_CONN", function()
        it("without it, the server closes the connection after END_REQUEST", function()
            local conn = app:connect()
            assert(conn:send_raw(H.request_bytes(1, { params = { TAG = "k" }, stdin = "x",
                                                      keep_conn = false })))
            local recs, err = conn:read_until_closed(3)
            assert.equal("closed", err)
            local res = H.response(recs, 1)
            assert.equal("k:x", res.body)
            assert.equal(1, res.ends)
            assert.equal(proto.END_REQUEST, recs[#recs].type)
            conn:close()
        end)

        it("with it, the connection serves the next request", function()
            local conn = app:connect()
            for i = 1, 3 do
                local res = assert(conn:request{ params = { TAG = "n" .. i }, stdin = "b",
                                                 keep_conn = true })
                assert.equal("n" .. i .. ":b", res.body)
            end
            assert.is_false(conn:closed())
            conn:close()
        end)
    end)
end)
