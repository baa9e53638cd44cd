-- moonfcgi behind Apache httpd (Debian's apache2): mod_proxy_fcgi as the responder's client
-- and mod_authnz_fcgi with examples/auth.lua as the authorizer, driven over HTTP with curl.
-- The configuration is the one docs/servers/apache.md shows (spec/support/servers.lua),
-- started on free loopback ports.
package.path = "spec/support/?.lua;" .. package.path
local needs = require "needs"
local servers = require "servers"

local ECHO = "spec/integration/apps/interop_echo.lua"
local AUTH = "examples/auth.lua"

local ALICE_TOKEN = "7f3c9a1e-alice"
local CHALLENGE = 'Basic realm="moonfcgi"'

-- Stops moonfcgi and checks that it exited 0: a graceful stop, and under the ASan suite no
-- leak (moonfcgi processes the specs start exit 23 on a leak there).
local stop_host = servers.stop_host

local summary = servers.summary

-- Runs request(i) for i = 1..n, each returning interop_echo's summary, and counts the
-- connections the worker had open across all of them (their "conns" inodes).
local function connections_seen(n, request)
    local seen, count = {}, 0
    for i = 1, n do
        for inode in request(i).conns:gmatch("%d+") do
            if not seen[inode] then
                seen[inode], count = true, count + 1
            end
        end
    end
    return count
end

describe("Apache httpd in front of moonfcgi", function()
    local missing = servers.missing("apache", "apache2-bin")
    if missing then
        pending(missing)
        return
    end

    local app, auth, srv
    local log = os.tmpname()

    setup(function()
        app = assert(servers.moonfcgi(ECHO, { args = { "--workers", "1" },
                                              env = { INTEROP_LOG = log } }))
        auth = assert(servers.moonfcgi(AUTH, { args = { "--workers", "1" } }))
        srv = assert(servers.apache.start(servers.documented("apache", {
            app = app.addr, authorizer = auth.addr })))
    end)

    teardown(function()
        if srv then
            srv:stop()
        end
        stop_host(app)
        stop_host(auth)
        os.remove(log)
        servers.cleanup()
    end)

    describe("mod_proxy_fcgi with enablereuse=on", function()
        it("passes a GET with its query string and headers through", function()
            local s = servers.checked_get(srv.url)
            assert.equal("1", s.id)
            assert.equal("0", s.body_length)
        end)

        it("passes a POST body of 300 KB through intact", function()
            local s, body = servers.checked_post(srv.url)
            assert.equal(tostring(#body), s.params.CONTENT_LENGTH)
        end)

        it("passes the Authorization header on (CGIPassAuth On)", function()
            local s = summary(servers.curl{ url = srv.url .. "/api",
                                            headers = { Authorization = "Bearer xyz" } })
            assert.equal("Bearer xyz", s.params.HTTP_AUTHORIZATION)
        end)

        it("passes the app's status and headers through", function()
            local res = servers.curl{ url = srv.url .. "/x?status=418" }
            assert.equal(418, res.status)
            assert.equal("text/plain", res.headers["content-type"])
            assert.equal("1", res.headers["x-interop-id"])
            assert.is_nil(res.headers["status"])
        end)

        it("sets FCGI_KEEP_CONN and sends sequential requests over kept connections", function()
            -- Each Apache child process keeps its own connection (Debian's event MPM starts
            -- two or three), and each curl run may land on another child.
            local seen = connections_seen(10, function(i)
                local s = summary(servers.curl{ url = srv.url .. "/seq/" .. i })
                assert.equal("true", s.keep_conn)
                return s
            end)
            assert.is_true(seen <= 3, "10 requests arrived on " .. seen .. " connections")
        end)

        it("ends the handler's request when the HTTP client goes away mid-response", function()
            local line = servers.abort_mid_response(srv.url, log)
            assert.matches("aborted=true", line)
            -- And the next request is served as usual.
            summary(servers.curl{ url = srv.url .. "/after-abort" })
        end)
    end)

    describe("mod_authnz_fcgi with examples/auth.lua", function()
        it("grants a bearer token and passes USER and ROLE on to the proxied app", function()
            local s = summary(servers.curl{ url = srv.url .. "/private/report",
                headers = { Authorization = "Bearer " .. ALICE_TOKEN } })
            assert.equal("alice", s.params.USER)
            assert.equal("admin", s.params.ROLE)
            assert.equal("alice", s.params.REMOTE_USER)
        end)

        it("grants basic credentials", function()
            local s = summary(servers.curl{ url = srv.url .. "/private/report",
                                            user = "bob:builder" })
            assert.equal("bob", s.params.USER)
            assert.equal("user", s.params.ROLE)
        end)

        it("denies missing credentials with the authorizer's 401 and its challenge", function()
            local res = servers.curl{ url = srv.url .. "/private/report" }
            assert.equal(401, res.status)
            assert.equal(CHALLENGE, res.headers["www-authenticate"])
            assert.equal("authentication required\n", res.body)
        end)

        it("denies wrong credentials with 401", function()
            local res = servers.curl{ url = srv.url .. "/private/report", user = "bob:wrong" }
            assert.equal(401, res.status)
            assert.equal(CHALLENGE, res.headers["www-authenticate"])
        end)

        it("denies a user without the admin role under /admin/ with 403", function()
            local res = servers.curl{ url = srv.url .. "/admin/panel", user = "bob:builder" }
            assert.equal(403, res.status)
            assert.equal("forbidden\n", res.body)
            local s = summary(servers.curl{ url = srv.url .. "/admin/panel",
                                            user = "alice:wonderland" })
            assert.equal("admin", s.params.ROLE)
        end)

        it("leaves paths outside the protected locations alone", function()
            local s = summary(servers.curl{ url = srv.url .. "/public" })
            assert.is_nil(s.params.USER)
            assert.is_nil(s.params.REMOTE_USER)
        end)

        it("makes the variables request environment that Apache's log format can log", function()
            servers.curl{ url = srv.url .. "/private/logged", user = "alice:wonderland" }
            -- Apache writes the access log line once the response is sent: wait for it.
            local text = servers.eventually(function()
                local t = srv:file("access.log")
                return t:find("/private/logged", 1, true) and t
            end, 5) or srv:file("access.log")
            assert.matches('"GET /private/logged HTTP/1.1" 200 %d+ user=alice role=admin', text)
        end)
    end)

    describe("mod_proxy_fcgi without enablereuse", function()
        local plain

        setup(function()
            plain = assert(servers.apache.start(servers.documented("apache", {
                app = app.addr, reuse = false, authorizer = false })))
        end)

        teardown(function()
            if plain then
                plain:stop()
            end
        end)

        it("sends no FCGI_KEEP_CONN and opens a new connection for every request", function()
            local seen = connections_seen(3, function(i)
                local s = summary(servers.curl{ url = plain.url .. "/once/" .. i,
                                                method = "POST", body = "request " .. i })
                assert.equal("false", s.keep_conn)
                assert.equal(tostring(#("request " .. i)), s.body_length)
                return s
            end)
            assert.is_true(seen >= 3, "3 requests arrived on " .. seen .. " connections")
        end)
    end)

    describe("with moonfcgi closing idle connections (--idle-timeout 1)", function()
        local idle, site

        setup(function()
            idle = assert(servers.moonfcgi(ECHO, { args = { "--workers", "1",
                                                            "--idle-timeout", "1" } }))
            site = assert(servers.apache.start(servers.documented("apache", {
                app = idle.addr, authorizer = false })))
        end)

        teardown(function()
            if site then
                site:stop()
            end
            stop_host(idle)
        end)

        it("lets Apache replace a pooled connection that moonfcgi closed", function()
            local first = summary(servers.curl{ url = site.url .. "/before" })
            -- moonfcgi closed Apache's pooled connection once it was idle for a second.
            local st = servers.worker_status(idle, function(s) return s.conns == 0 end, 10)
            assert.equal(0, st and st.conns, idle:output())
            local second = summary(servers.curl{ url = site.url .. "/after" })
            assert.equal("true", second.keep_conn)
            assert.are_not.equal(first.conns, second.conns)
        end)
    end)

    describe("with moonfcgi on a unix socket", function()
        local dir, host, unix

        setup(function()
            if not servers.is_root() then
                return
            end
            dir = assert(servers.make_dir("apache-unix"))
            -- Apache's children run as www-data: moonfcgi gives them the socket with --user
            -- (the socket keeps its default mode 0660).
            host = assert(servers.moonfcgi(ECHO, {
                listen = "unix:" .. dir .. "/moonfcgi.sock",
                args = { "--workers", "1", "--user", servers.run_user() } }))
            unix = assert(servers.apache.start(servers.documented("apache", {
                app = host.addr, authorizer = false })))
        end)

        teardown(function()
            if unix then
                unix:stop()
            end
            stop_host(host)
            if dir then
                os.execute("rm -rf " .. servers.quote(dir))
            end
        end)

        it("serves requests through a socket owned by the user Apache runs as", function()
            if not servers.is_root() then
                pending(needs.missing("needs root: Apache's children and moonfcgi's --user"))
                return
            end
            local s = summary(servers.curl{ url = unix.url .. "/over-unix", method = "POST",
                                            body = "abc" })
            assert.equal("/over-unix", s.uri)
            assert.equal("3", s.body_length)
            assert.equal("true", s.keep_conn)
        end)
    end)

    servers.describe_rest(function(addr)
        return servers.apache.start(servers.documented("apache", { app = addr, authorizer = false }))
    end)
end)
