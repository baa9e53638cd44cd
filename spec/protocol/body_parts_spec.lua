-- A body gathered by req:body() is read straight into its block while one of its records is
-- still arriving (src/conn.c, "part in progress"). These specs cut the records of such
-- bodies at every point, with padding, past --max-body, and while the handler goes away.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local H = require "protocol_helpers"

local rep, char, concat = string.rep, string.char, table.concat

-- A record with the padding given (not the usual multiple of 8).
local function rec(rtype, id, content, padlen)
    return char(1, rtype, math.floor(id / 256), id % 256, math.floor(#content / 256),
                #content % 256, padlen, 0) .. content .. rep("\0", padlen)
end

-- A stream of records of `size` content bytes each, with the paddings in turn, then its end.
local function stream(rtype, id, s, size, pads)
    local out, i, n = {}, 1, 0
    while i <= #s do
        n = n + 1
        out[#out + 1] = rec(rtype, id, s:sub(i, i + size - 1), pads[(n - 1) % #pads + 1])
        i = i + size
    end
    out[#out + 1] = rec(rtype, id, "", 0)
    return concat(out)
end

-- A position-dependent body: a lost, repeated or moved byte shows.
local function body_of(n)
    local t = {}
    for i = 1, n do
        t[i] = char(65 + (i * 7 + math.floor(i / 26)) % 26)
    end
    return concat(t)
end

local function request(id, body, opts)
    opts = opts or {}
    local role = opts.role or "responder"
    local bytes = proto.begin_request(id, role, true)
        .. proto.stream(proto.PARAMS, id, proto.encode_params({ { "REQUEST_METHOD", "POST" } }))
        .. stream(proto.STDIN, id, body, opts.size or 37, opts.pads or { 3, 0, 7, 1 })
    if opts.data then
        bytes = bytes .. stream(proto.DATA, id, opts.data, opts.data_size or 29, { 5, 2 })
    end
    return bytes
end

describe("a body whose records arrive in pieces", function()
    local app

    local function load(opts)
        app = test.load("spec/protocol/apps/body_parts.lua", opts or { timeout = 5 })
    end

    after_each(function()
        if app then
            app:close()
            app = nil
        end
    end)

    -- Sends bytes cut at the given offsets (sorted), running the core between the pieces.
    local function send_cut(conn, bytes, cuts)
        local from = 1
        for _, cut in ipairs(cuts) do
            assert(conn:send_raw(bytes:sub(from, cut)))
            app:step(0)
            from = cut + 1
        end
        assert(conn:send_raw(bytes:sub(from)))
    end

    local function answer(conn, id)
        local recs = assert(H.read_until_end(conn, id, 5))
        return H.response(recs, id)
    end

    it("is whole when the request is cut in two at every point", function()
        load()
        local body = body_of(150)
        local bytes = request(1, body)
        local conn = app:connect()
        for cut = 1, #bytes - 1 do
            send_cut(conn, bytes, { cut })
            local res = answer(conn, 1)
            assert.equal(200, res.status)
            assert.equal("150:" .. body, res.body, "cut at " .. cut)
        end
        conn:close()
    end)

    it("is whole when the request is cut in three at many points", function()
        load()
        local body = body_of(200)
        local bytes = request(1, body, { size = 53, pads = { 0, 5 } })
        local conn = app:connect()
        local seed = 7
        for _ = 1, 300 do
            seed = (seed * 1103515245 + 12345) % 2147483648
            local a = 1 + seed % (#bytes - 2)
            seed = (seed * 1103515245 + 12345) % 2147483648
            local b = a + 1 + seed % (#bytes - a - 1)
            send_cut(conn, bytes, { a, b })
            local res = answer(conn, 1)
            assert.equal("200:" .. body, res.body, "cut at " .. a .. " and " .. b)
        end
        conn:close()
    end)

    it("is whole when it arrives one byte at a time", function()
        load()
        local body = body_of(90)
        local bytes = request(3, body, { size = 40, pads = { 6 } })
        local conn = app:connect()
        local cuts = {}
        for i = 1, #bytes - 1 do
            cuts[i] = i
        end
        send_cut(conn, bytes, cuts)
        assert.equal("90:" .. body, answer(conn, 3).body)
        conn:close()
    end)

    it("keeps the filter's body and data apart, cut at every point", function()
        load()
        local body, data = body_of(70), body_of(95):lower()
        local bytes = request(2, body, { role = "filter", data = data })
        local conn = app:connect()
        for cut = 1, #bytes - 1 do
            send_cut(conn, bytes, { cut })
            local res = answer(conn, 2)
            assert.equal("70:" .. body .. "|95:" .. data, res.body, "cut at " .. cut)
        end
        conn:close()
    end)

    it("is whole at 1 MiB in 64 KiB records sent in uneven pieces", function()
        load()
        local body = rep(body_of(1000), 1049):sub(1, 1048576)
        local bytes = request(1, body, { size = 65535, pads = { 1, 0, 7 } })
        local conn = app:connect()
        local cuts, at = {}, 0
        for _, step in ipairs({ 100000, 7, 65536, 3, 131072, 65543, 1, 250000 }) do
            at = at + step
            cuts[#cuts + 1] = at
        end
        send_cut(conn, bytes, cuts)
        local res = answer(conn, 1)
        assert.equal(#body + 8, #res.body)
        assert.is_true(res.body == "1048576:" .. body, "the body differs")
        conn:close()
    end)

    for _, case in ipairs({ { 100, "100:" }, { 101, "error:too large" } }) do
        it(("answers a body of %d bytes at --max-body 100, cut at every point"):format(case[1]),
            function()
                load({ max_body = 100, timeout = 5 })
                local body = body_of(case[1])
                local bytes = request(1, body, { size = 60, pads = { 4 } })
                local conn = app:connect()
                for cut = 1, #bytes - 1 do
                    send_cut(conn, bytes, { cut })
                    local res = answer(conn, 1)
                    local want = case[1] == 100 and ("100:" .. body) or case[2]
                    assert.equal(want, res.body, "cut at " .. cut)
                end
                -- The connection still reads records in step afterwards.
                local res = assert(conn:request{ id = 4, params = { REQUEST_METHOD = "POST" },
                                                 stdin = "after" })
                assert.equal("5:after", res.body)
                conn:close()
            end)
    end

    it("drops the rest of a record whose request ended, and reads the next request", function()
        load({ timeout = 0.2 })
        local body = body_of(50)
        local bytes = request(1, body, { size = 50, pads = { 6 } })
        local stdin_at = bytes:find(char(1, proto.STDIN, 0, 1), 1, true)
        local conn = app:connect()
        -- The params first, so that the handler waits in body() when the STDIN record comes.
        assert(conn:send_raw(bytes:sub(1, stdin_at - 1)))
        app:step(0.05)
        -- Then the STDIN header and ten bytes of its content.
        assert(conn:send_raw(bytes:sub(stdin_at, stdin_at + 8 + 10 - 1)))
        -- --timeout ends the handler: a 504 and END_REQUEST while the record is unfinished.
        local res = answer(conn, 1)
        assert.equal(504, res.status)
        assert(conn:send_raw(bytes:sub(stdin_at + 8 + 10)))
        local res2 = assert(conn:request{ id = 2, params = { REQUEST_METHOD = "POST" },
                                          stdin = "next" })
        assert.equal("4:next", res2.body)
        conn:close()
    end)
end)
