-- moonfcgi behind Caddy (Debian's caddy): reverse_proxy with the fastcgi transport, driven
-- over HTTP with curl. The configuration is the one docs/servers/caddy.md shows
-- (spec/support/servers.lua), started on free loopback ports.
package.path = "spec/support/?.lua;" .. package.path
local servers = require "servers"

local ECHO = "spec/integration/apps/interop_echo.lua"

local stop_host = servers.stop_host

local summary = servers.summary

describe("Caddy in front of moonfcgi", function()
    local missing = servers.missing("caddy", "caddy")
    if missing then
        pending(missing)
        return
    end

    teardown(function()
        servers.cleanup()
    end)

    describe("with reverse_proxy and the fastcgi transport", function()
        local app, srv
        local log = os.tmpname()

        setup(function()
            app = assert(servers.moonfcgi(ECHO, { args = { "--workers", "1" },
                                                  env = { INTEROP_LOG = log } }))
            srv = assert(servers.caddy.start(servers.documented("caddy", { app = app.addr })))
        end)

        teardown(function()
            if srv then
                srv:stop()
            end
            stop_host(app)
            os.remove(log)
        end)

        it("passes a GET with its query string and headers through", function()
            local s = servers.checked_get(srv.url)
            assert.equal("1", s.id)
            assert.equal("false", s.keep_conn)
            -- Without a split extension, the whole path is PATH_INFO.
            assert.equal("/things/1", s.params.PATH_INFO)
        end)

        it("passes a POST body of 300 KB through intact", function()
            local s, body = servers.checked_post(srv.url)
            assert.equal(tostring(#body), s.params.CONTENT_LENGTH)
        end)

        it("passes the app's status and headers through", function()
            local res = servers.curl{ url = srv.url .. "/x?status=418" }
            assert.equal(418, res.status)
            assert.equal("text/plain", res.headers["content-type"])
            assert.equal("1", res.headers["x-interop-id"])
            assert.is_nil(res.headers["status"])
        end)

        it("opens a new connection for every request (Caddy sends no FCGI_KEEP_CONN)", function()
            local seen = {}
            for i = 1, 3 do
                local s = summary(servers.curl{ url = srv.url .. "/seq/" .. i })
                assert.equal("false", s.keep_conn)
                seen[s.conns] = true
            end
            local n = 0
            for _ in pairs(seen) do
                n = n + 1
            end
            assert.equal(3, n)
        end)

        it("ends the handler's request when the HTTP client goes away mid-response", function()
            local line = servers.abort_mid_response(srv.url, log)
            assert.matches("aborted=true", line)
            summary(servers.curl{ url = srv.url .. "/after-abort" })
        end)
    end)

    describe("with moonfcgi on a unix socket", function()
        local dir, app, srv

        setup(function()
            dir = assert(servers.make_dir("caddy-unix"))
            app = assert(servers.moonfcgi(ECHO, { listen = "unix:" .. dir .. "/moonfcgi.sock",
                                                  args = { "--workers", "1" } }))
            srv = assert(servers.caddy.start(servers.documented("caddy", { app = app.addr })))
        end)

        teardown(function()
            if srv then
                srv:stop()
            end
            stop_host(app)
            if dir then
                os.execute("rm -rf " .. servers.quote(dir))
            end
        end)

        it("serves requests through it", function()
            local s = summary(servers.curl{ url = srv.url .. "/over-unix", method = "POST",
                                            body = "abc" })
            assert.equal("/over-unix", s.uri)
            assert.equal("3", s.body_length)
        end)
    end)

    servers.describe_rest(function(addr)
        return servers.caddy.start(servers.documented("caddy", { app = addr }))
    end)
end)
