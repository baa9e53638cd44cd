-- The ngx global of cosocket.md section 5 in a handler: constants, log, config, phases,
-- time, worker, ctx, var, the request and the response through ngx, and the features that
-- are not provided. Handlers run in the real core through moonfcgi.test.
local test = require "moonfcgi.test"
local client = require "moonfcgi.client"
local process = require "spec.support.process"

_G.ngx_handlers = _G.ngx_handlers or {}
local handlers = _G.ngx_handlers

local app

local function request(name, fn, opts)
    handlers[name] = fn
    opts = opts or {}
    opts.params = opts.params or {}
    opts.params.H = name
    opts.params.REQUEST_METHOD = opts.params.REQUEST_METHOD or "GET"
    opts.params.REQUEST_URI = opts.params.REQUEST_URI or "/"
    opts.stdin = opts.stdin or ""
    return assert(app:request(opts))
end

describe("the ngx global", function()
    before_each(function()
        app = test.load("spec/ngx/apps/handlers.lua", { timeout = 5, max_body = 1000 })
    end)

    after_each(function()
        app:close()
    end)

    it("exists before the app loads, with OpenResty's constants", function()
        assert.is_table(ngx)
        assert.same({ 0, -1, -2, -4, -5 }, { ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED })
        assert.same({ 200, 302, 404, 500 }, { ngx.HTTP_OK, ngx.HTTP_MOVED_TEMPORARILY,
            ngx.HTTP_NOT_FOUND, ngx.HTTP_INTERNAL_SERVER_ERROR })
        assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8 }, { ngx.STDERR, ngx.EMERG, ngx.ALERT, ngx.CRIT,
            ngx.ERR, ngx.WARN, ngx.NOTICE, ngx.INFO, ngx.DEBUG })
    end)

    it("has ngx.null, the light userdata of cjson.null", function()
        assert.equal(require("cjson").null, ngx.null)
        assert.equal("userdata", type(ngx.null))
    end)

    it("has ngx.config", function()
        assert.equal("http", ngx.config.subsystem)
        assert.is_true(ngx.config.ngx_lua_version >= 10025)
        assert.is_number(ngx.config.nginx_version)
        assert.is_false(ngx.config.debug)
        assert.equal("spec/ngx/apps/", ngx.config.prefix())
    end)

    it("reports the phase: init while the app loads, content in a handler", function()
        assert.equal("init", _G.ngx_load_phase)
        local res = request("phase", function()
            ngx.print(ngx.get_phase())
        end)
        assert.equal("content", res.body)
    end)

    it("gives every request its own ngx.ctx, which may be replaced", function()
        local seen = {}
        handlers.ctx = function()
            ngx.ctx.n = (ngx.ctx.n or 0) + 1
            seen[#seen + 1] = ngx.ctx.n
            ngx.ctx = { replaced = true }
            seen[#seen + 1] = ngx.ctx.replaced
        end
        request("ctx", handlers.ctx)
        request("ctx", handlers.ctx)
        assert.same({ 1, true, 1, true }, seen)
        assert.has_error(function()
            ngx.ctx = 1
        end)
    end)

    it("has the time functions, on the worker's clock", function()
        local got
        request("time", function()
            got = { now = ngx.now(), time = ngx.time(), today = ngx.today() }
            ngx.update_time()
            got.after = ngx.now()
        end)
        assert.is_true(math.abs(got.now - os.time()) < 5)
        assert.equal(math.floor(got.now), got.time)
        assert.equal(os.date("%Y-%m-%d", got.time), got.today)
        assert.is_true(got.after >= got.now)
        assert.equal("Thu, 18 Nov 2010 11:27:35 GMT", ngx.http_time(1290079655))
        assert.equal("Thu, 18-Nov-10 11:27:35 GMT", ngx.cookie_time(1290079655))
        assert.equal("Sat, 01-Jan-2050 00:00:00 GMT", ngx.cookie_time(2524608000))
        assert.equal(1290079655, ngx.parse_http_time("Thu, 18 Nov 2010 11:27:35 GMT"))
        assert.equal(1290079655, ngx.parse_http_time("Thursday, 18-Nov-10 11:27:35 GMT"))
        assert.equal(1290079655, ngx.parse_http_time("Thu Nov 18 11:27:35 2010"))
        assert.is_nil(ngx.parse_http_time("yesterday"))
        assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$", ngx.localtime())
        assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$", ngx.utctime())
    end)

    it("sleeps without blocking the worker", function()
        local order = {}
        handlers.slow = function()
            ngx.sleep(0.05)
            order[#order + 1] = "slow"
        end
        handlers.fast = function()
            order[#order + 1] = "fast"
        end
        local conn = app:connect()
        conn:send{ id = 1, params = { H = "slow" }, stdin = "" }
        conn:send{ id = 2, params = { H = "fast" }, stdin = "" }
        assert(conn:wait(1))
        assert(conn:wait(2))
        conn:close()
        assert.same({ "fast", "slow" }, order)
    end)

    it("has ngx.worker", function()
        local got
        request("worker", function()
            got = { ngx.worker.id(), ngx.worker.count(), ngx.worker.pid(), ngx.worker.exiting() }
        end)
        assert.same({ 0, 1, got[3], false }, got)
        assert.is_true(got[3] > 1)
    end)

    describe("ngx.var", function()
        it("reads the params, upper-cased, nil when absent", function()
            local got
            request("var", function()
                got = { ngx.var.request_uri, ngx.var.http_traceparent, ngx.var.request_method,
                    ngx.var.nope, ngx.var.REMOTE_ADDR }
            end, { params = { REQUEST_URI = "/x?y=1", HTTP_TRACEPARENT = "00-abc",
                REMOTE_ADDR = "10.0.0.1" } })
            assert.same({ "/x?y=1", "00-abc", "GET", nil, "10.0.0.1" }, got)
        end)

        it("falls back for scheme, and knows uri, args, arg_*, cookie_* and host", function()
            local got
            handlers.var2 = function()
                got = { ngx.var.scheme, ngx.var.uri, ngx.var.args, ngx.var.arg_b,
                    ngx.var.cookie_sid, ngx.var.host, ngx.var.is_args }
            end
            request("var2", handlers.var2, { params = { HTTPS = "on", REQUEST_URI = "/p?a=1&b=x%20y",
                QUERY_STRING = "a=1&b=x%20y", HTTP_COOKIE = "a=1; sid=s3", HTTP_HOST = "Ex.com:8080" } })
            assert.same({ "https", "/p", "a=1&b=x%20y", "x%20y", "s3", "ex.com", "?" }, got)
            request("var2", handlers.var2, { params = { REQUEST_SCHEME = "http", SERVER_NAME = "srv" } })
            assert.same({ "http", "/", nil, nil, nil, "srv", "" }, got)
        end)

        it("is read-only", function()
            local err
            request("varset", function()
                err = select(2, pcall(function()
                    ngx.var.foo = 1
                end))
            end)
            assert.matches("read%-only", err)
        end)
    end)

    describe("ngx.req", function()
        it("get_method, get_headers and get_uri_args read the request", function()
            local got
            request("req", function()
                local h = ngx.req.get_headers()
                got = { ngx.req.get_method(), h["user-agent"], h.User_Agent, h["content-type"],
                    ngx.req.get_uri_args(), ngx.req.http_version() }
            end, { params = { REQUEST_METHOD = "PUT", HTTP_USER_AGENT = "curl/8",
                CONTENT_TYPE = "text/plain", QUERY_STRING = "a=1&a=2&b", SERVER_PROTOCOL = "HTTP/1.1" } })
            assert.same({ "PUT", "curl/8", "curl/8", "text/plain", { a = { "1", "2" }, b = true }, 1.1 },
                got)
        end)

        it("get_headers and get_uri_args stop at max and say truncated", function()
            local got
            request("reqmax", function()
                local h, herr = ngx.req.get_headers(1)
                local a, aerr = ngx.req.get_uri_args(1)
                local n = 0
                for _ in pairs(h) do
                    n = n + 1
                end
                got = { n, herr, a.a, a.b, aerr }
            end, { params = { HTTP_A = "1", HTTP_B = "2", QUERY_STRING = "a=1&b=2" } })
            assert.same({ 1, "truncated", "1", nil, "truncated" }, got)
        end)

        it("read_body makes the body available to get_body_data and get_post_args", function()
            local got
            request("body", function()
                local before = ngx.req.get_body_data()
                ngx.req.read_body()
                got = { before, ngx.req.get_body_data(), ngx.req.get_post_args(), ngx.var.request_body }
            end, { params = { REQUEST_METHOD = "POST" }, stdin = { "a=1&", "b=two" } })
            assert.same({ nil, "a=1&b=two", { a = "1", b = "two" }, "a=1&b=two" }, got)
        end)

        it("discard_body leaves the body unread", function()
            local got
            request("discard", function()
                ngx.req.discard_body()
                got = ngx.req.get_body_data()
            end, { params = { REQUEST_METHOD = "POST" }, stdin = "ignored" })
            assert.is_nil(got)
        end)

        it("read_body of a body that does not arrive in time ends the request with 408",
           function()
            local t = test.load("spec/ngx/apps/handlers.lua", { read_timeout = 0.2 })
            handlers.slowbody = function()
                ngx.req.read_body()
                ngx.say("not reached")
            end
            local res = assert(t:request{ params = { H = "slowbody", REQUEST_METHOD = "POST" },
                stdin = false })
            t:close()
            assert.equal(408, res.status)
        end)

        it("read_body of a body past --max-body ends the request with 413", function()
            local res = request("big", function()
                ngx.req.read_body()
                ngx.say("not reached")
            end, { params = { REQUEST_METHOD = "POST" }, stdin = ("x"):rep(2000) })
            assert.equal(413, res.status)
            assert.not_matches("not reached", res.body)
        end)
    end)

    describe("the response", function()
        it("ngx.status and ngx.header set the status and headers", function()
            local got
            local res = request("resp", function()
                local before = ngx.status
                ngx.status = ngx.HTTP_CREATED
                ngx.header.content_type = "application/json"
                ngx.header["X-List"] = { "a", "b" }
                ngx.header.x_gone = "x"
                ngx.header.x_gone = nil
                got = { before, ngx.status, ngx.header.content_type, ngx.header["Content-Type"] }
                ngx.print("{}")
            end)
            assert.same({ 200, 201, "application/json", "application/json" }, got)
            assert.equal(201, res.status)
            assert.equal("application/json", res.headers["content-type"])
            assert.same({ "a", "b" }, res.headers["x-list"])
            assert.is_nil(res.headers["x-gone"])
        end)

        it("ngx.print and ngx.say take strings, numbers, booleans, nil, ngx.null and arrays",
           function()
            local got
            local res = request("say", function()
                got = ngx.say("a", 1, true, nil, ngx.null, { "b", { "c", 2 } })
                ngx.print("x", "y")
                ngx.flush(true)
            end)
            assert.equal(1, got)
            assert.equal("a1truenilnullbc2\nxy", res.body)
        end)

        it("ngx.status reads 401 in an authorizer that set none", function()
            local got
            request("authz", function()
                got = ngx.status
            end, { role = "authorizer", stdin = false })
            assert.equal(401, got)
        end)

        it("ngx.flush without wait has written the bytes too", function()
            local got
            local res = request("flushnowait", function(req)
                ngx.print("x")
                got = ngx.flush()
            end)
            assert.equal(1, got)
            assert.equal("x", res.body)
        end)

        it("ngx.print refuses a table that is not an array", function()
            local res = request("sayhash", function()
                ngx.print({ a = 1 })
            end)
            assert.equal(500, res.status)
            assert.matches("non%-array table found", res.stderr)
        end)

        it("ngx.status set after the headers went out is logged and ignored", function()
            local res = request("late", function()
                ngx.say("early")
                ngx.flush(true)
                ngx.status = 404
                ngx.header.x_late = "1"
                ngx.say("still here")
            end)
            assert.equal(200, res.status)
            assert.equal("early\nstill here\n", res.body)
            assert.is_nil(res.headers["x-late"])
        end)

        it("ngx.exit(status) ends the handler and sends that status with a short page", function()
            local after = false
            local res = request("exit", function()
                ngx.exit(ngx.HTTP_FORBIDDEN)
                after = true
            end)
            assert.equal(403, res.status)
            assert.matches("403 Forbidden", res.body)
            assert.is_false(after)
            assert.equal(0, res.app_status)
        end)

        it("ngx.exit after output keeps what was sent; ngx.exit(ngx.OK) just ends", function()
            local res = request("exit2", function()
                ngx.say("partial")
                ngx.exit(ngx.HTTP_NOT_FOUND)
            end)
            assert.equal(200, res.status)
            assert.equal("partial\n", res.body)
            res = request("exit3", function()
                ngx.status = 202
                ngx.exit(ngx.OK)
            end)
            assert.equal(202, res.status)
            assert.equal("", res.body)
        end)

        it("ngx.exit works from inside a helper function and leaves the worker serving", function()
            local function deny()
                ngx.exit(401)
            end
            for _ = 1, 3 do
                local res = request("exit4", function()
                    deny()
                    error("not reached")
                end)
                assert.equal(401, res.status)
            end
            assert.equal(0, app:stats().requests)
        end)

        it("ngx.redirect sends Location with 302 or the given status", function()
            local res = request("redir", function()
                return ngx.redirect("/elsewhere")
            end)
            assert.equal(302, res.status)
            assert.equal("/elsewhere", res.headers.location)
            res = request("redir2", function()
                return ngx.redirect("https://example.com/", ngx.HTTP_MOVED_PERMANENTLY)
            end)
            assert.equal(301, res.status)
            res = request("redir3", function()
                return ngx.redirect("/x", 200)
            end)
            assert.equal(500, res.status)
            assert.matches("only ngx.HTTP_MOVED_TEMPORARILY", res.stderr)
        end)

        it("go through the same request object as req", function()
            local res = request("mixed", function(req)
                req:set_header("X-A", "1")
                ngx.header["X-B"] = "2"
                req:write("req ")
                ngx.say("ngx")
            end)
            assert.equal("1", res.headers["x-a"])
            assert.equal("2", res.headers["x-b"])
            assert.equal("req ngx\n", res.body)
        end)
    end)

    describe("what is not provided", function()
        for _, call in ipairs({
            { "ngx.location.capture", function() return ngx.location.capture("/x") end },
            { "ngx.location.capture_multi", function() return ngx.location.capture_multi({}) end },
            { "ngx.thread.spawn", function() return ngx.thread.spawn(print) end },
            { "ngx.req.socket", function() return ngx.req.socket() end },
            { "ngx.req.set_header", function() return ngx.req.set_header("a", "b") end },
            { "ngx.exec", function() return ngx.exec("/x") end },
            { "ngx.timer.at", function() return ngx.timer.at(0, print) end },
        }) do
            it("raises an error naming " .. call[1], function()
                local res = request("missing", call[2])
                assert.equal(500, res.status)
                assert.matches(call[1]:gsub("%.", "%%.") .. " is not provided by moonfcgi",
                    res.stderr)
            end)
        end
    end)

    it("outside a handler, request functions raise 'no request found'", function()
        assert.has_error(function()
            ngx.say("x")
        end)
        local ok, err = pcall(function()
            return ngx.var.request_uri
        end)
        assert.is_false(ok)
        assert.matches("no request found", err)
    end)
end)

describe("ngx.log", function()
    it("writes to the host log at the matching level, as OpenResty formats its arguments",
       function()
        local p = assert(process.moonfcgi("spec/ngx/apps/log.lua",
            { args = { "--workers", "2", "--log-level", "info" } }))
        local c = assert(client.connect(p.addr))
        local res = assert(c:request{ params = { REQUEST_METHOD = "GET", REQUEST_URI = "/" },
            stdin = "" })
        c:close()
        assert.equal(200, res.status)
        -- ngx.worker in the binary: this worker's id from 0, the --workers count, its pid.
        local id, count, pid = res.body:match("^ok (%d)/(%d) (%d+)\n$")
        assert.is_truthy(id == "0" or id == "1", res.body)
        assert.equal("2", count)
        assert.are_not.equal(tostring(p.pid), pid)
        local out
        for _ = 1, 200 do
            out = p:output()
            if out:find("handler done", 1, true) then
                break
            end
            require("moonfcgi").sleep(0.01)
        end
        p:stop()
        p:cleanup()
        assert.matches("%[warn%][^\n]*%[lua%] spec/ngx/apps/log%.lua:%d+: at load nil true null 1",
            out)
        assert.matches("%[error%][^\n]*%[lua%] spec/ngx/apps/log%.lua:%d+: an error", out)
        assert.matches("%[info%][^\n]*handler done", out)
        assert.not_matches("a debug line", out)
    end)
end)

describe("an OpenResty content_by_lua body, unchanged", function()
    local cbl

    before_each(function()
        cbl = test.load("spec/ngx/apps/content_by_lua.lua")
    end)

    after_each(function()
        cbl:close()
    end)

    it("answers a GET", function()
        local res = assert(cbl:request{ params = { REQUEST_METHOD = "GET", REQUEST_URI = "/hello?name=bob",
            QUERY_STRING = "name=bob", HTTP_HOST = "example.com", HTTP_USER_AGENT = "curl/8",
            REQUEST_SCHEME = "http" }, stdin = "" })
        assert.equal(200, res.status)
        assert.equal("text/plain", res.headers["content-type"])
        assert.equal("moonfcgi", res.headers["x-powered-by"])
        assert.equal("hello, bob!\nscheme=http host=example.com ua=curl/8\n", res.body)
    end)

    it("reads a POST body", function()
        local res = assert(cbl:request{ params = { REQUEST_METHOD = "POST", REQUEST_URI = "/hello" },
            stdin = "payload" })
        assert.equal(200, res.status)
        assert.matches("md5=" .. ngx.md5("payload"), res.body)
    end)

    it("rejects a bad name with 400 and redirects with 301", function()
        local res = assert(cbl:request{ params = { REQUEST_METHOD = "GET", QUERY_STRING = "name=B0b" },
            stdin = "" })
        assert.equal(400, res.status)
        assert.equal("bad name\n", res.body)
        res = assert(cbl:request{ params = { REQUEST_METHOD = "GET", QUERY_STRING = "name=bob&go=1" },
            stdin = "" })
        assert.equal(301, res.status)
        assert.equal("/hello?name=bob", res.headers.location)
    end)
end)
