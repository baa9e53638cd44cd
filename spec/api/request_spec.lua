-- docs/api.md, "The request object": identity, params and input, one describe per field
-- or method. Each spec registers its handler in _G.api_handlers (see apps/handlers.lua) and
-- keeps what the handler saw in `got`, to assert on it here.
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"

local rep = string.rep

_G.api_handlers = _G.api_handlers or {}
local handlers = _G.api_handlers

local app

local function request(name, fn, opts)
    handlers[name] = fn
    opts = opts or {}
    local params = opts.params or {}
    if params[1] ~= nil then
        params[#params + 1] = { "H", name }
    else
        params.H = name
    end
    opts.params = params
    return assert(app:request(opts))
end

describe("the request object", function()
    before_each(function()
        app = test.load("spec/api/apps/handlers.lua", { max_body = 100, read_timeout = 2 })
    end)

    after_each(function()
        app:close()
    end)

    describe("req.id", function()
        it("is the FastCGI request id", function()
            local got
            handlers.id = function(req)
                got = req.id
            end
            local conn = app:connect()
            assert(conn:request{ id = 4242, params = { H = "id" }, stdin = "" })
            assert.equal(4242, got)
            assert(conn:request{ id = 1, params = { H = "id" }, stdin = "" })
            assert.equal(1, got)
            conn:close()
        end)
    end)

    describe("req.role", function()
        it("is responder, authorizer or filter", function()
            local roles = {}
            for _, role in ipairs({ "responder", "authorizer", "filter" }) do
                request("role", function(req)
                    roles[#roles + 1] = req.role
                    req:set_status(200)
                end, { role = role, data = "" })
            end
            assert.same({ "responder", "authorizer", "filter" }, roles)
        end)
    end)

    describe("req.keep_conn", function()
        it("says whether the web server keeps the connection", function()
            local got = {}
            request("keep", function(req) got[#got + 1] = req.keep_conn end, { keep_conn = true })
            request("keep", function(req) got[#got + 1] = req.keep_conn end, { keep_conn = false })
            assert.same({ true, false }, got)
        end)
    end)

    describe("req.params", function()
        it("maps every param name to its value", function()
            local got
            request("params", function(req)
                got = {}
                for k, v in pairs(req.params) do
                    got[k] = v
                end
            end, { params = { REQUEST_METHOD = "GET", EMPTY = "", BIN = "a\0b\255" } })
            assert.same({ REQUEST_METHOD = "GET", EMPTY = "", BIN = "a\0b\255", H = "params" }, got)
        end)

        it("is read-only: assigning a new key is an error", function()
            local ok, err
            request("ro", function(req)
                ok, err = pcall(function() req.params.NEW = "x" end)
            end, { params = { A = "1" } })
            assert.is_false(ok)
            assert.matches("read%-only", tostring(err))
        end)
    end)

    describe("req:param", function()
        it("returns the value, or nil for a param not sent", function()
            local got = {}
            request("param", function(req)
                got.a = req:param("A")
                got.empty = req:param("EMPTY")
                got.missing = req:param("MISSING")
                got.case = req:param("a")
            end, { params = { A = "value", EMPTY = "" } })
            assert.same({ a = "value", empty = "" }, got)
        end)
    end)

    describe("req:each_param", function()
        it("iterates name, value in the order they arrived", function()
            local got = {}
            request("each", function(req)
                for k, v in req:each_param() do
                    got[#got + 1] = k .. "=" .. v
                end
            end, { params = { { "ZETA", "1" }, { "ALPHA", "2" }, { "MID", "" }, { "B", "4" } } })
            assert.same({ "ZETA=1", "ALPHA=2", "MID=", "B=4", "H=each" }, got)
        end)

        it("keeps the order of 5000 params", function()
            local params, want = {}, {}
            for i = 1, 5000 do
                params[i] = { "P" .. (5001 - i), tostring(i) }
                want[i] = "P" .. (5001 - i) .. "=" .. i
            end
            want[5001] = "H=each_many"
            local got = {}
            request("each_many", function(req)
                for k, v in req:each_param() do
                    got[#got + 1] = k .. "=" .. v
                end
            end, { params = params })
            assert.same(want, got)
        end)
    end)

    describe("req.method and req.uri", function()
        it("are REQUEST_METHOD and REQUEST_URI", function()
            local got = {}
            request("mu", function(req)
                got = { req.method, req.uri }
            end, { params = { REQUEST_METHOD = "PATCH", REQUEST_URI = "/a/b?c=d" } })
            assert.same({ "PATCH", "/a/b?c=d" }, got)
        end)

        it("are nil when the web server did not send them", function()
            local got = {}
            request("mu2", function(req)
                got = { m = req.method, u = req.uri }
            end)
            assert.same({}, got)
        end)
    end)

    describe("req:header", function()
        it("reads a request header by its HTTP name, in any case", function()
            local got = {}
            request("hdr", function(req)
                got.ct = req:header("Content-Type")
                got.ct_lower = req:header("content-type")
                got.cl = req:header("Content-Length")
                got.token = req:header("X-Token")
                got.token_upper = req:header("X-TOKEN")
                got.token_mixed = req:header("x-ToKeN")
                got.host = req:header("Host")
                got.missing = req:header("X-Missing")
            end, { params = { CONTENT_TYPE = "text/plain", CONTENT_LENGTH = "0",
                              HTTP_X_TOKEN = "secret", HTTP_HOST = "example.org" } })
            assert.same({ ct = "text/plain", ct_lower = "text/plain", cl = "0", token = "secret",
                          token_upper = "secret", token_mixed = "secret", host = "example.org" },
                        got)
        end)
    end)

    describe("req:read", function()
        it("returns the body in chunks of at most n bytes, then nil at the end", function()
            local chunks = {}
            local after
            request("read", function(req)
                for _ = 1, 100 do
                    local s = req:read(3)
                    if not s then
                        break
                    end
                    chunks[#chunks + 1] = s
                end
                after = { req:read(3) }
            end, { stdin = { "abcd", "efghij" } })
            assert.equal("abcdefghij", table.concat(chunks))
            for _, c in ipairs(chunks) do
                assert.is_true(#c >= 1 and #c <= 3)
            end
            assert.same({}, after)
        end)

        it("without n returns what has arrived, whatever its size", function()
            local total = {}
            request("read_all", function(req)
                for _ = 1, 1000 do
                    local s = req:read()
                    if not s then
                        break
                    end
                    total[#total + 1] = s
                end
            end, { stdin = rep("r", 200000) })
            assert.equal(rep("r", 200000), table.concat(total))
        end)

        it("waits for the body: the handler starts before the body arrives", function()
            local started, got = false, nil
            handlers.wait = function(req)
                started = true
                got = req:read()
            end
            local conn = app:connect()
            local id = assert(conn:send{ params = { H = "wait" }, stdin = false })
            for _ = 1, 1000 do
                if started then
                    break
                end
                app:run(0.01)
            end
            assert.is_true(started)
            assert.is_nil(got) -- no byte of the body was sent yet
            assert(conn:send_raw(proto.stream(proto.STDIN, id, "late")))
            assert(conn:wait(id))
            assert.equal("late", got)
            conn:close()
        end)

        it("returns nil at once for an empty body", function()
            local got = "unset"
            request("read_empty", function(req)
                got = req:read()
            end, { stdin = "" })
            assert.is_nil(got)
        end)
    end)

    describe("req:body", function()
        it("returns the whole body as one string", function()
            local got
            request("body", function(req)
                got = req:body()
            end, { stdin = { "one ", "two ", "three" } })
            assert.equal("one two three", got)
        end)

        it("returns the body at --max-body", function()
            local got
            request("body_max", function(req)
                got = { req:body() }
            end, { stdin = rep("m", 100), stdin_chunk = 7 })
            assert.same({ rep("m", 100) }, got)
        end)

        it("returns nil, \"too large\" one byte past --max-body", function()
            local got
            request("body_over", function(req)
                got = { req:body() }
            end, { stdin = rep("m", 101), stdin_chunk = 7 })
            assert.same({ nil, "too large" }, got)
        end)

        for _, case in ipairs({ { 100, true }, { 101, false } }) do
            it("waits for a body of " .. case[1] .. " bytes that arrives after the call", function()
                local started, got = false, nil
                handlers.body_late = function(req)
                    started = true
                    got = { req:body() }
                end
                local conn = app:connect()
                local id = assert(conn:send{ params = { H = "body_late" }, stdin = false })
                for _ = 1, 1000 do
                    if started then
                        break
                    end
                    app:run(0.01)
                end
                assert.is_true(started)
                assert.is_nil(got) -- no byte of the body was sent yet
                local data = rep("l", case[1])
                assert(conn:send_raw(proto.record(proto.STDIN, id, data:sub(1, 60))))
                app:run(0.02)
                assert(conn:send_raw(proto.stream(proto.STDIN, id, data:sub(61), 10)))
                assert(conn:wait(id))
                if case[2] then
                    assert.same({ data }, got)
                else
                    assert.same({ nil, "too large" }, got)
                end
                conn:close()
            end)
        end

        it("returns an empty string for an empty body", function()
            local got
            request("body_empty", function(req)
                got = req:body()
            end, { stdin = "" })
            assert.equal("", got)
        end)
    end)

    describe("req:read_data and req:data", function()
        it("read the FCGI_DATA stream in the filter role", function()
            local got = {}
            request("data", function(req)
                got.body = req:body()
                got.first = req:read_data(4)
                got.rest = req:data()
            end, { role = "filter", stdin = "input", data = "0123456789" })
            assert.same({ body = "input", first = "0123", rest = "456789" }, got)
        end)

        it("see FCGI_DATA_LENGTH and FCGI_DATA_LAST_MOD in req.params", function()
            local got = {}
            request("data_len", function(req)
                got.len = req.params.FCGI_DATA_LENGTH
                got.mod = req.params.FCGI_DATA_LAST_MOD
                got.data = req:data()
            end, { role = "filter", params = { FCGI_DATA_LAST_MOD = "1700000000" },
                   stdin = "", data = { rep("d", 40), rep("e", 37) } })
            assert.same({ len = "77", mod = "1700000000", data = rep("d", 40) .. rep("e", 37) },
                        got)
        end)

        it("data() returns the data at --max-body, nil, \"too large\" one byte past", function()
            local got = {}
            request("data_max", function(req)
                got[#got + 1] = { req:data() }
            end, { role = "filter", stdin = "", data = rep("a", 100), data_chunk = 9 })
            request("data_max", function(req)
                got[#got + 1] = { req:data() }
            end, { role = "filter", stdin = "", data = rep("a", 101), data_chunk = 9 })
            assert.same({ { rep("a", 100) }, { nil, "too large" } }, got)
        end)

        it("return nil at the end of the data", function()
            local got = {}
            request("data_end", function(req)
                got.a = req:read_data()
                got.b = { req:read_data() }
            end, { role = "filter", stdin = "", data = "x" })
            assert.same({ a = "x", b = {} }, got)
        end)

        for _, role in ipairs({ "responder", "authorizer" }) do
            it("are an error in the " .. role .. " role", function()
                local r1, r2
                request("data_" .. role, function(req)
                    r1 = { pcall(req.read_data, req) }
                    r2 = { pcall(req.data, req) }
                    req:set_status(200)
                end, { role = role, stdin = "" })
                assert.is_false(r1[1])
                assert.is_false(r2[1])
                assert.is_string(r1[2])
            end)
        end
    end)
end)
