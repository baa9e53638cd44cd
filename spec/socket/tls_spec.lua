-- sslhandshake (cosocket.md section 2) against a real nginx serving HTTPS with certificates the
-- spec makes (spec/support/upstreams.lua): a good one, a wrong host name, an unknown CA, an
-- expired one; SNI, session reuse, TLS kept across the pool, the trusted bundle option.
package.path = "spec/support/?.lua;spec/socket/?.lua;" .. package.path
local h = require "helpers"
local upstreams = require "upstreams"
local socket = require "moonfcgi.socket"

describe("moonfcgi.socket TLS", function()
    local srv, app

    setup(function()
        srv = assert(upstreams.https())
        app = h.load({ ssl_trusted_certificate = srv.ca_file })
    end)

    teardown(function()
        app:close()
        srv:stop()
    end)

    local function tls(kind, name, verify, reuse)
        local s = socket.tcp()
        s:settimeout(5000)
        assert(s:connect("127.0.0.1", srv.ports[kind]))
        local sess, err = s:sslhandshake(reuse, name, verify)
        return s, sess, err
    end

    local function get(s, close)
        assert(s:send({ "GET / HTTP/1.1\r\nHost: localhost\r\n",
                        close and "Connection: close\r\n" or "", "\r\n" }))
        local status = s:receive()
        local len
        repeat
            local line = assert(s:receive())
            len = len or tonumber(line:match("^[Cc]ontent%-[Ll]ength: (%d+)"))
        until line == ""
        return status, s:receive(len)
    end

    it("verifies a good certificate with SNI and talks HTTP over it", function()
        local r = { h.call(app, function()
            local s, sess = tls("good", "localhost", true)
            local status, body = get(s)
            return { type(sess), status, body }
        end) }
        assert.same({ "cdata", "HTTP/1.1 200 OK", "good\n" }, r[1])
    end)

    it("returns true when reused_session is false, and checks an IP as the name", function()
        local r = { h.call(app, function()
            local _, sess = tls("good", "127.0.0.1", true, false)
            return sess
        end) }
        assert.is_true(r[1])
    end)

    it("fails a wrong host name, an unknown CA and an expired certificate", function()
        local r = { h.call(app, function()
            local out = {}
            for _, kind in ipairs({ "wrong_host", "unknown_ca", "expired" }) do
                local s, sess, err = tls(kind, "localhost", true)
                out[#out + 1] = tostring(sess) .. " " .. tostring(err)
                out[#out + 1] = select(2, s:send("x"))
            end
            return out
        end) }
        assert.equal("nil certificate host mismatch", r[1][1])
        assert.equal("closed", r[1][2])
        assert.matches("^nil %d+: unable to get local issuer certificate$", r[1][3])
        assert.matches("^nil 10: certificate has expired$", r[1][5])
    end)

    it("does not verify without ssl_verify", function()
        local r = { h.call(app, function()
            local s, sess = tls("unknown_ca", "localhost", false, false)
            return { sess, (get(s)) }
        end) }
        assert.same({ true, "HTTP/1.1 200 OK" }, r[1])
    end)

    it("a plain HTTP peer fails the handshake", function()
        local r = { h.call(app, function()
            local _, sess, err = tls("http", "localhost", true)
            return { sess, err }
        end) }
        assert.same({ nil, "handshake failed" }, r[1])
    end)

    it("resumes a session passed back to a later handshake", function()
        local r = { h.call(app, function()
            local s, sess = tls("good", "localhost", true)
            get(s, true)
            s:close()
            local t, sess2 = tls("good", "localhost", true, sess)
            local status = get(t)
            return { t:ssl_reused(), status, type(sess2) }
        end) }
        assert.same({ true, "HTTP/1.1 200 OK", "cdata" }, r[1])
    end)

    it("keeps TLS across the pool: a reused connection's handshake succeeds at once", function()
        local r = { h.call(app, function()
            local s = tls("good", "localhost", true)
            get(s)
            assert(s:setkeepalive())
            local t = socket.tcp()
            assert(t:connect("127.0.0.1", srv.ports.good))
            local reused = t:getreusedtimes()
            local ok = t:sslhandshake(false, "localhost", true)
            return { reused, ok, (get(t)) }
        end) }
        assert.same({ 1, true, "HTTP/1.1 200 OK" }, r[1])
    end)

    it("verifies against the system bundle by default, where the test CA is not", function()
        local plain = h.load()
        local r = { h.call(plain, function()
            local _, sess, err = tls("good", "localhost", true)
            return { sess, err }
        end) }
        plain:close()
        assert.is_nil(r[1][1])
        assert.matches("^%d+: ", r[1][2])
    end)
end)
