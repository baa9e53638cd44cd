-- docs/api.md, "The request object", "Output" and the authorizer role: what a handler sends and
-- how it reaches the web server.
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"

_G.api_handlers = _G.api_handlers or {}
local handlers = _G.api_handlers

local app

local function request(name, fn, opts)
    handlers[name] = fn
    opts = opts or {}
    opts.params = opts.params or {}
    opts.params.H = name
    return assert(app:request(opts))
end

-- The header block of a raw STDOUT, as its lines.
local function header_lines(stdout)
    local head = stdout:match("^(.-)\r\n\r\n") or ""
    local lines = {}
    for line in (head .. "\r\n"):gmatch("(.-)\r\n") do
        lines[#lines + 1] = line
    end
    return lines
end

describe("output", function()
    before_each(function()
        app = test.load("spec/api/apps/handlers.lua", { timeout = 5 })
    end)

    after_each(function()
        app:close()
    end)

    describe("defaults", function()
        it("are status 200 and Content-Type text/html; charset=utf-8 in the responder role",
           function()
            local res = request("defaults", function(req) req:write("x") end)
            assert.equal(200, res.status)
            assert.equal("text/html; charset=utf-8", res.headers["content-type"])
            assert.equal("x", res.body)
        end)

        it("are the same in the filter role", function()
            local res = request("defaults_f", function(req) req:write(req:data()) end,
                                { role = "filter", stdin = "", data = "f" })
            assert.equal(200, res.status)
            assert.equal("text/html; charset=utf-8", res.headers["content-type"])
            assert.equal("f", res.body)
        end)

        it("apply to a handler that writes nothing: an empty 200 response", function()
            local res = request("nothing", function() end)
            assert.equal(200, res.status)
            assert.equal("text/html; charset=utf-8", res.headers["content-type"])
            assert.equal("", res.body)
        end)
    end)

    describe("req:set_status", function()
        it("sets the status", function()
            local res = request("status", function(req)
                req:set_status(404)
                req:write("missing")
            end)
            assert.equal(404, res.status)
            assert.equal("missing", res.body)
        end)

        it("sets the reason phrase", function()
            local res = request("reason", function(req)
                req:set_status(299, "Quite Fine")
            end)
            assert.equal(299, res.status)
            assert.equal("299 Quite Fine", res.headers.status)
        end)

        it("is an error once the headers are sent", function()
            local ok, err
            local res = request("status_late", function(req)
                req:write("body")
                ok, err = pcall(req.set_status, req, 500)
            end)
            assert.is_false(ok)
            assert.is_string(err)
            assert.equal(200, res.status)
            assert.equal("body", res.body)
        end)

        it("rejects codes outside 100..999 and reasons with CR or LF", function()
            local got = {}
            request("status_bad", function(req)
                got[1] = pcall(req.set_status, req, 99)
                got[2] = pcall(req.set_status, req, 1000)
                got[3] = pcall(req.set_status, req, "200")
                got[4] = pcall(req.set_status, req, 200, "OK\r\nX-Injected: 1")
                got[5] = pcall(req.set_status, req, 200, "OK\n")
            end)
            assert.same({ false, false, false, false, false }, got)
        end)
    end)

    describe("req:set_header", function()
        it("adds a header", function()
            local res = request("hdr", function(req)
                req:set_header("X-One", "1")
                req:set_header("Content-Type", "text/plain")
            end)
            assert.equal("1", res.headers["x-one"])
            assert.equal("text/plain", res.headers["content-type"])
        end)

        it("replaces an earlier value of the same header", function()
            local res = request("hdr_replace", function(req)
                req:set_header("X-Same", "first")
                req:set_header("x-same", "second")
            end)
            assert.equal("second", res.headers["x-same"])
        end)

        it("repeats the header for a list value", function()
            local res = request("hdr_list", function(req)
                req:set_header("Set-Cookie", { "a=1", "b=2", "c=3" })
            end)
            assert.same({ "a=1", "b=2", "c=3" }, res.headers["set-cookie"])
            local n = 0
            for _, line in ipairs(header_lines(res.stdout)) do
                if line:lower():find("^set%-cookie:") then
                    n = n + 1
                end
            end
            assert.equal(3, n)
        end)

        it("accepts a number as the value", function()
            local res = request("hdr_num", function(req)
                req:set_header("X-Count", 42)
            end)
            assert.equal("42", res.headers["x-count"])
        end)

        it("is an error once the headers are sent", function()
            local ok
            local res = request("hdr_late", function(req)
                req:write("body")
                ok = pcall(req.set_header, req, "X-Late", "1")
            end)
            assert.is_false(ok)
            assert.is_nil(res.headers["x-late"])
        end)

        it("is an error after req:flush sent the headers", function()
            local ok
            request("hdr_flush", function(req)
                req:flush()
                ok = pcall(req.set_header, req, "X-Late", "1")
            end)
            assert.is_false(ok)
        end)

        it("rejects invalid names and values", function()
            local got = {}
            local res = request("hdr_bad", function(req)
                local bad = {
                    { "", "v" }, { "Bad Name", "v" }, { "Bad:Name", "v" }, { "Bad\r\nName", "v" },
                    { "X-V", "line\r\nX-Injected: 1" }, { "X-V", "a\nb" }, { "X-V", "a\rb" },
                    { "X-V", "nul\0byte" }, { "X-T", { "ok", {} } },
                    { 42, "v" }, { "X-F", function() end },
                }
                for i, b in ipairs(bad) do
                    got[i] = pcall(req.set_header, req, b[1], b[2])
                end
            end)
            for i = 1, 11 do
                assert.is_false(got[i], "case " .. i)
            end
            assert.is_nil(res.headers["x-injected"])
        end)
    end)

    describe("req:write", function()
        it("sends strings and numbers, headers first, and returns true", function()
            local r
            local res = request("write", function(req)
                r = { req:write("a", 1, "b", 2.5) }
                req:write()
                req:write("", "c")
            end)
            assert.same({ true }, r)
            assert.equal("a1b2.5c", res.body)
            assert.matches("^Status: 200", res.stdout)
        end)

        it("is an error for a table, a boolean or nil among its arguments", function()
            local got = {}
            local res = request("write_bad", function(req)
                got[1] = pcall(req.write, req, {})
                got[2] = pcall(req.write, req, true)
                got[3] = pcall(req.write, req, "ok", nil)
            end)
            assert.same({ false, false, false }, got)
            assert.is_nil(res.body:find("table", 1, true))
        end)

        it("sends a large body whole", function()
            local big = string.rep("0123456789abcdef", 65536)
            local res = request("write_big", function(req)
                req:write(big)
            end)
            assert.is_true(res.body == big)
        end)
    end)

    describe("req:flush", function()
        it("sends what is buffered now, before the handler ends", function()
            -- The handler goes on only once the spec has seen "early": the bytes left before
            -- the handler ended, whatever the machine's speed.
            local seen = false
            handlers.flush = function(req)
                req:write("early")
                assert(req:flush())
                for _ = 1, 1000 do
                    if seen then
                        break
                    end
                    require("moonfcgi").sleep(0.01)
                end
                req:write(" late")
            end
            local conn = app:connect()
            assert(conn:send_raw(proto.request{ id = 1, params = { H = "flush" }, stdin = "" }))
            local rec = assert(conn:read_record(10))
            assert.equal(proto.STDOUT, rec.type)
            local _, _, body = proto.parse_cgi(rec.content)
            assert.equal("early", body)
            seen = true
            local rest = {}
            for _ = 1, 10 do
                local r = assert(conn:read_record(2))
                rest[#rest + 1] = r
                if r.type == proto.END_REQUEST then
                    break
                end
            end
            assert.equal(" late", rest[1].content)
            conn:close()
        end)

        it("returns true and sends the headers with an empty body", function()
            local r
            local res = request("flush_empty", function(req)
                req:set_status(201)
                r = req:flush()
            end)
            assert.is_true(r)
            assert.equal(201, res.status)
        end)
    end)

    describe("req:raw_write", function()
        it("sends bytes as they are: the handler's own CGI header block", function()
            local res = request("raw", function(req)
                req:raw_write("Status: 201 Created\r\nX-Raw: yes\r\n", "Content-Type: a/b\r\n\r\n")
                req:raw_write("raw ", 7)
            end)
            assert.equal("Status: 201 Created\r\nX-Raw: yes\r\nContent-Type: a/b\r\n\r\nraw 7",
                         res.stdout)
            assert.equal(201, res.status)
        end)

        for _, case in ipairs({
            { "set_status", function(req) req:set_status(200) end },
            { "set_header", function(req) req:set_header("X-A", "1") end },
            { "write", function(req) req:write("x") end },
        }) do
            it("is an error after " .. case[1], function()
                local ok
                request("raw_after_" .. case[1], function(req)
                    case[2](req)
                    ok = pcall(req.raw_write, req, "Status: 200\r\n\r\n")
                end)
                assert.is_false(ok)
            end)

            it("makes a later " .. case[1] .. " an error", function()
                local ok
                local res = request("raw_before_" .. case[1], function(req)
                    req:raw_write("Status: 202\r\n\r\nraw")
                    ok = pcall(case[2], req)
                end)
                assert.is_false(ok)
                assert.equal("Status: 202\r\n\r\nraw", res.stdout)
            end)
        end
    end)

    describe("req:log", function()
        it("sends a line to FCGI_STDERR", function()
            local r
            local res = request("log", function(req)
                r = req:log("something", "happened", 42)
                req:write("ok")
            end)
            assert.is_true(r)
            assert.equal("something happened 42\n", res.stderr)
            assert.equal("ok", res.body)
        end)
    end)

    describe("req:aborted", function()
        it("is false for a request the web server still wants", function()
            local got
            request("not_aborted", function(req) got = req:aborted() end)
            assert.is_false(got)
        end)

        it("is true once the web server sent FCGI_ABORT_REQUEST", function()
            local got
            handlers.aborted = function(req)
                require("moonfcgi").sleep(0.1)
                got = req:aborted()
            end
            local conn = app:connect()
            local id = assert(conn:send{ params = { H = "aborted" }, stdin = "" })
            assert(conn:send_raw(proto.abort_request(id)))
            assert(conn:wait(id))
            assert.is_true(got)
            conn:close()
        end)
    end)

    describe("the handler's return value", function()
        it("is the app status in FCGI_END_REQUEST", function()
            assert.equal(42, request("ret", function() return 42 end).app_status)
            assert.equal(0, request("ret0", function() end).app_status)
            assert.equal(4294967295, request("retmax", function() return 4294967295 end).app_status)
        end)
    end)
end)

describe("the authorizer role", function()
    before_each(function()
        app = test.load("spec/api/apps/handlers.lua")
    end)

    after_each(function()
        app:close()
    end)

    it("grants access with status 200", function()
        local res = request("grant", function(req) req:set_status(200) end,
                            { role = "authorizer" })
        assert.equal(200, res.status)
        assert.equal("complete", res.protocol_status)
    end)

    it("passes variables on as Variable-NAME headers", function()
        local res = request("vars", function(req)
            req:set_status(200)
            req:set_variable("USER", "alice")
            req:set_variable("ROLE", "admin")
        end, { role = "authorizer" })
        assert.equal(200, res.status)
        assert.equal("alice", res.headers["variable-user"])
        assert.equal("admin", res.headers["variable-role"])
    end)

    it("denies with any other status, whose whole response goes to the client", function()
        local res = request("deny", function(req)
            req:set_status(403)
            req:set_header("Content-Type", "text/plain")
            req:write("go away")
        end, { role = "authorizer" })
        assert.equal(403, res.status)
        assert.equal("go away", res.body)
        assert.equal("text/plain", res.headers["content-type"])
    end)

    it("denies with 401 when the handler sets no status", function()
        local res = request("nostatus", function() end, { role = "authorizer" })
        assert.equal(401, res.status)
        assert.matches("^Status: 401", res.stdout)
    end)

    it("sends an explicit Status header when it grants", function()
        local res = request("explicit", function(req) req:set_status(200) end,
                            { role = "authorizer" })
        assert.matches("^Status: 200", res.stdout)
    end)
end)
