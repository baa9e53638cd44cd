-- The deployment guides quote their nginx configurations, and spec/support/nginx.lua writes
-- them (its RECIPES): this spec keeps the two in step, so the guides cannot drift from what is
-- tested. Each block of a guide between `<!-- config: NAME -->` and `<!-- /config -->` must be
-- exactly nginx.site(nginx.recipe(NAME)) (trailing whitespace aside). Then each documented
-- configuration runs with a real nginx in front of a real moonfcgi, on loopback addresses, and
-- the behaviour the guides describe is checked: kept connections, unix socket permissions,
-- streaming, request sizes, what becomes of an OVERLOADED answer.
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local needs = require "needs"
local process = require "process"
local nginx = require "nginx"
local http = require "http_client"
local client = require "moonfcgi.client"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local PROBE = "spec/integration/apps/probe.lua"
local WHOAMI = "spec/integration/apps/scale_whoami.lua"
local q = http.quote

-- The guides and the recipes each shows, in the order it shows them.
local GUIDES = {
    { path = "docs/servers/nginx.md",
      recipes = { "keepalive-tcp", "unix-socket", "streaming", "large-requests" } },
    { path = "docs/scaling.md", recipes = { "scale-out" } },
}

-- Trailing whitespace on each line and blank lines at the end do not count.
local function normalise(text)
    return (text:gsub("[ \t\r]+\n", "\n"):gsub("[ \t\r]+$", ""):gsub("\n+$", "")) .. "\n"
end

-- The marked blocks of a guide, in order: { { name, text } }, and the number of opening
-- markers (a malformed block shows as a marker without a block).
local function config_blocks(text)
    local blocks = {}
    local block = "<!%-%- config: ([%w%-]+) %-%->\n```nginx\n(.-)```\n<!%-%- /config %-%->"
    for name, body in text:gmatch(block) do
        blocks[#blocks + 1] = { name = name, text = body }
    end
    local markers = 0
    for _ in text:gmatch("<!%-%- config: ") do
        markers = markers + 1
    end
    return blocks, markers
end

local function free_listen()
    return "127.0.0.1:" .. process.free_port()
end

-- Stops moonfcgi and checks it exited 0 (under the ASan suite, a leak exits 23).
local function stop_host(p)
    if p then
        local st = p:stop()
        local out = p:output()
        p:cleanup()
        assert.equal(0, st, "moonfcgi exited with status " .. tostring(st) .. ":\n" .. out)
    end
end

local function stop_all(servers, hosts)
    for _, s in ipairs(servers) do
        s:stop()
    end
    local err
    for _, p in ipairs(hosts) do
        local ok, e = pcall(stop_host, p)
        err = err or (not ok and e)
    end
    assert(not err, err)
end

-- Requests sent at once (curl --parallel-immediate); returns the status of each, by URL.
local function parallel(urls, max_time)
    local args = {}
    for _, u in ipairs(urls) do
        args[#args + 1] = q(u) .. " -o /dev/null"
    end
    local cmd = ("curl -sS --no-progress-meter -Z --parallel-immediate --parallel-max %d "
        .. "--max-time %d -w '%%{http_code} %%{url_effective}\\n' %s"):format(#urls,
        max_time or 10, table.concat(args, " "))
    local status = {}
    http.each_line(cmd, (max_time or 10) + 5, function(line)
        local code, url = line:match("^(%d+) (%S+)")
        if code then
            status[url] = tonumber(code)
        end
    end)
    return status
end

-- nginx writes a request's access log line after it has sent the answer: waits (up to 3 s)
-- for a line with `text` in it, and returns the log.
local function await_access_log(srv, text)
    local deadline = client.now() + 3
    local log
    repeat
        log = srv:access_log()
        if log:find(text, 1, true) then
            break
        end
        ffi.C.poll(nil, 0, 20)
    until client.now() >= deadline
    return log
end

local function count_status(statuses, code)
    local n = 0
    for _, s in pairs(statuses) do
        if s == code then
            n = n + 1
        end
    end
    return n
end

local function help_text()
    local f = io.popen("env -u LD_PRELOAD " .. q(process.bin) .. " --help 2>&1")
    local help = f:read("*a")
    f:close()
    return help
end

-- A default of `moonfcgi --help`, e.g. help_default("--idle-timeout") is "60".
local function help_default(option)
    return help_text():match(option:gsub("%-", "%%-") .. " [^\n]-%(default (%w+)%)")
end

local function seconds(v)
    return tonumber((tostring(v):match("^(%d+)s$")))
end

describe("the nginx configurations in the guides", function()
    for _, guide in ipairs(GUIDES) do
        describe(guide.path, function()
            local blocks, markers, by_name

            setup(function()
                local text = assert(http.read_file(guide.path), "cannot read " .. guide.path)
                blocks, markers = config_blocks(text)
                by_name = {}
                for _, b in ipairs(blocks) do
                    by_name[b.name] = b.text
                end
            end)

            it("shows exactly the recipes it is known to show, each block well marked", function()
                assert.equal(markers, #blocks, "a <!-- config: --> marker without a well-formed "
                    .. "```nginx block and <!-- /config --> after it")
                local names = {}
                for _, b in ipairs(blocks) do
                    names[#names + 1] = b.name
                end
                assert.same(guide.recipes, names)
            end)

            for _, name in ipairs(guide.recipes) do
                it("shows recipe " .. name .. " as spec/support/nginx.lua writes it", function()
                    assert.is_string(by_name[name], "no block " .. name)
                    assert.equal(normalise(nginx.site(nginx.recipe(name))),
                        normalise(by_name[name]))
                end)
            end
        end)
    end

    it("orders the timeouts as the guide says: nginx's idle timeout below moonfcgi's, nginx's "
        .. "read timeout above moonfcgi's handler timeout", function()
        local idle = tonumber(help_default("--idle-timeout"))
        local timeout = tonumber(help_default("--timeout"))
        assert.is_number(idle)
        assert.is_number(timeout)
        for name in pairs(nginx.RECIPES) do
            local r = nginx.recipe(name)
            assert.is_true(seconds(r.keepalive_timeout) < idle, name)
            assert.is_true(seconds(r.timeouts.read) > timeout, name)
        end
    end)

    it("sizes client_max_body_size at moonfcgi's default --max-body in the common recipes",
        function()
            assert.equal("16M", help_default("--max-body"))
            for _, name in ipairs({ "keepalive-tcp", "unix-socket", "streaming", "scale-out" }) do
                assert.equal("16m", nginx.recipe(name).client_max_body_size, name)
            end
        end)
end)

describe("the documented nginx configurations, run", function()
    if not nginx.find() then
        pending(needs.missing("nginx not installed (apt-get install nginx); these specs need it"))
        return
    end
    if not http.have_curl() then
        pending(needs.missing("curl not installed (apt-get install curl); these specs need it"))
        return
    end

    teardown(function()
        http.cleanup()
    end)

    describe("keepalive-tcp", function()
        local p, srv

        setup(function()
            p = assert(process.moonfcgi(PROBE, { args = { "--workers", "1" } }))
            srv = assert(nginx.start(nginx.recipe("keepalive-tcp", {
                upstream = p.addr, listen = free_listen() })))
        end)

        teardown(function()
            stop_all({ srv }, { p })
        end)

        it("serves requests", function()
            local results = http.many({ srv.url .. "/a", srv.url .. "/b", srv.url .. "/c" }, 10)
            assert.equal(3, #results)
            for _, r in ipairs(results) do
                assert.equal(200, r.status)
            end
        end)

        it("answers 413 itself to a body over client_max_body_size, before moonfcgi sees it",
            function()
                local res = http.request{ method = "POST", url = srv.url .. "/echo",
                                          body = ("x"):rep(16 * 1024 * 1024 + 1), max_time = 10 }
                assert.equal(413, res.status)
                assert.matches("nginx", res.body) -- nginx's page, not the app's
                assert.matches("client intended to send too large body", srv:error_log())
            end)
    end)

    describe("unix-socket", function()
        if not nginx.is_root() then
            pending(needs.missing("needs root: moonfcgi drops to another user, nginx's workers run as www-data"))
            return
        end
        local dir, good, bad, srv_good, srv_bad

        setup(function()
            dir = assert(nginx.make_prefix()) -- searchable by nginx's workers
            good = assert(process.moonfcgi(PROBE, {
                listen = "unix:" .. dir .. "/app.sock",
                args = { "--workers", "1", "--socket-mode", "0660", "--user", "nobody:www-data" },
            }))
            bad = assert(process.moonfcgi(PROBE, {
                listen = "unix:" .. dir .. "/private.sock",
                args = { "--workers", "1", "--socket-mode", "0600", "--user", "nobody:www-data" },
            }))
            srv_good = assert(nginx.start(nginx.recipe("unix-socket", {
                upstream = "unix:" .. dir .. "/app.sock", listen = free_listen() })))
            srv_bad = assert(nginx.start(nginx.recipe("unix-socket", {
                upstream = "unix:" .. dir .. "/private.sock", listen = free_listen() })))
        end)

        teardown(function()
            local ok, err = pcall(stop_all, { srv_good, srv_bad }, { good, bad })
            if dir then
                os.execute("rm -rf " .. q(dir))
            end
            assert(ok, err)
        end)

        it("gives the socket to --user's user and group with --socket-mode", function()
            local f = io.popen("stat -c '%U %G %a' " .. q(dir .. "/app.sock"))
            local st = f:read("*l")
            f:close()
            assert.equal("nobody www-data 660", st)
        end)

        it("serves requests when nginx's workers are in the socket's group", function()
            local res = http.get(srv_good.url .. "/hello", { max_time = 10 })
            assert.equal(200, res.status)
            assert.equal("ok GET /hello\n", res.body)
        end)

        it("answers 502, with Permission denied in nginx's log, when they may not connect",
            function()
                local res = http.get(srv_bad.url .. "/hello", { max_time = 10 })
                assert.equal(502, res.status)
                assert.matches("private%.sock failed %(13: Permission denied%)",
                    srv_bad:error_log())
            end)
    end)

    describe("streaming", function()
        local p, srv

        setup(function()
            p = assert(process.moonfcgi(PROBE, { args = { "--workers", "1" } }))
            srv = assert(nginx.start(nginx.recipe("streaming", {
                upstream = p.addr, listen = free_listen() })))
        end)

        teardown(function()
            stop_all({ srv }, { p })
        end)

        -- The times (since the request) at which the lines of the answer arrived.
        local function arrivals(url)
            local times = {}
            http.each_line("curl -sS -N --max-time 10 " .. q(url), 15, function(_, t)
                times[#times + 1] = t
            end)
            return times
        end

        it("passes the pieces on as the handler flushes them where buffering is off", function()
            local t = arrivals(srv.url .. "/stream/?n=3&gap=0.3")
            assert.equal(3, #t)
            assert.is_true(t[2] - t[1] >= 0.15 and t[3] - t[2] >= 0.15,
                "pieces came at " .. table.concat(t, ", "))
        end)

        it("passes them on as they come where buffering is on too (nginx 1.22)", function()
            -- The probe routes on the first word of the path: this is its /stream, in
            -- nginx's location / rather than /stream/.
            local t = arrivals(srv.url .. "/stream-buffered?n=3&gap=0.3")
            assert.equal(3, #t)
            assert.is_true(t[2] - t[1] >= 0.15 and t[3] - t[2] >= 0.15,
                "pieces came at " .. table.concat(t, ", "))
        end)

        it("redirects /stream to /stream/ (nginx does so for a location ending in a slash)",
            function()
                local res = http.get(srv.url .. "/stream?n=1", { max_time = 10 })
                assert.equal(301, res.status)
                assert.matches("/stream/%?n=1$", res.headers["location"])
            end)
    end)

    describe("large-requests, with moonfcgi --max-body 64M", function()
        local p, srv

        setup(function()
            p = assert(process.moonfcgi(PROBE, {
                args = { "--workers", "1", "--max-body", "64M" } }))
            srv = assert(nginx.start(nginx.recipe("large-requests", {
                upstream = p.addr, listen = free_listen() })))
        end)

        teardown(function()
            stop_all({ srv }, { p })
        end)

        it("passes a body of 20 MiB", function()
            local n = 20 * 1024 * 1024
            local res = http.request{ method = "POST", url = srv.url .. "/echo",
                                      body = ("b"):rep(n), max_time = 30,
                                      headers = { ["Content-Type"] = "application/octet-stream" } }
            assert.equal(200, res.status)
            assert.equal(tostring(n), res.headers["x-body-length"])
        end)

        it("passes a URL with a 30,000-byte query", function()
            local res = http.get(srv.url .. "/params?x=" .. ("q"):rep(30000), { max_time = 10 })
            assert.equal(200, res.status)
            assert.equal(30002, tonumber(res.body:match("query=(%d+)")))
            assert.is_true(tonumber(res.body:match("total=(%d+)")) <= 65535)
        end)

        it("answers 500 itself to a URL whose params pass 65535 bytes: moonfcgi never sees it",
            function()
                local res = http.get(srv.url .. "/params?x=" .. ("q"):rep(33000), { max_time = 10 })
                assert.equal(500, res.status)
                assert.matches("fastcgi request record is too big", srv:error_log())
            end)
    end)

    describe("an OVERLOADED answer (moonfcgi past --max-reqs)", function()
        local hosts, servers = {}, {}

        teardown(function()
            stop_all(servers, hosts)
        end)

        local function host(args)
            local p = assert(process.moonfcgi(WHOAMI, { args = args, env = { INSTANCE = "h" } }))
            hosts[#hosts + 1] = p
            return p
        end

        local function slow_urls(srv, n, secs)
            local urls = {}
            for i = 1, n do
                urls[i] = ("%s/slow/%d?s=%s"):format(srv.url, i, secs)
            end
            return urls
        end

        it("becomes a 502 from nginx", function()
            local p = host({ "--workers", "1", "--max-reqs", "1" })
            local srv = assert(nginx.start(nginx.recipe("keepalive-tcp", {
                upstream = p.addr, listen = free_listen() })))
            servers[#servers + 1] = srv
            local st = parallel(slow_urls(srv, 3, 0.5))
            -- One of the three at a time is in flight; the others are refused.
            assert.equal(3, count_status(st, 200) + count_status(st, 502))
            assert.is_true(count_status(st, 502) >= 1)
            assert.matches("upstream sent unexpected FastCGI record: 3", srv:error_log())
        end)

        it("is retried on another host with the scale-out recipe (invalid_header)", function()
            local busy = host({ "--workers", "1", "--max-reqs", "1" })
            local other = host({ "--workers", "1" })
            local srv = assert(nginx.start(nginx.recipe("scale-out", {
                upstream = { busy.addr, other.addr }, listen = free_listen(),
                log_upstream = true })))
            servers[#servers + 1] = srv
            local st = parallel(slow_urls(srv, 4, 0.5))
            assert.equal(4, count_status(st, 200))
            local retried = 0
            await_access_log(srv, "upstream_status=502, 200")
            for line in srv:access_log():gmatch("[^\n]+") do
                if line:find("upstream=" .. busy.addr .. ", " .. other.addr
                    .. " upstream_status=502, 200", 1, true) then
                    retried = retried + 1
                end
            end
            assert.is_true(retried >= 1, srv:access_log())
        end)
    end)

    describe("moonfcgi's 504 for a handler past --timeout, with the scale-out recipe", function()
        local a, b, srv

        setup(function()
            a = assert(process.moonfcgi(WHOAMI, { args = { "--workers", "1", "--timeout", "1" } }))
            b = assert(process.moonfcgi(WHOAMI, { args = { "--workers", "1", "--timeout", "1" } }))
            srv = assert(nginx.start(nginx.recipe("scale-out", {
                upstream = { a.addr, b.addr }, listen = free_listen(), log_upstream = true })))
        end)

        teardown(function()
            stop_all({ srv }, { a, b })
        end)

        it("reaches the client and is not retried on another host", function()
            local res = http.get(srv.url .. "/slow/long?s=3", { max_time = 10 })
            -- moonfcgi's own 504 (upstream_status below): its --timeout ended the handler,
            -- which would have answered 200 after 3 s.
            assert.equal(504, res.status)
            local log = await_access_log(srv, '"GET /slow/long')
            assert.matches(
                '"GET /slow/long%?s=3 HTTP/1.1" 504 upstream=[%d.:]+ upstream_status=504\n', log)
        end)
    end)
end)
