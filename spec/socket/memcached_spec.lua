-- moonfcgi.socket against a real memcached (its text protocol, as lua-resty-memcached speaks
-- it): a value larger than the socket's buffer limit read by size, receiveuntil on "\r\n",
-- and a pooled connection.
package.path = "spec/support/?.lua;spec/socket/?.lua;" .. package.path
local h = require "helpers"
local upstreams = require "upstreams"
local socket = require "moonfcgi.socket"

describe("moonfcgi.socket and memcached", function()
    local srv, app

    setup(function()
        srv = assert(upstreams.memcached())
        app = h.load({ socket_buffer = 64 * 1024 })
    end)

    teardown(function()
        app:close()
        srv:stop()
    end)

    it("stores and fetches a 300 KiB value, then reuses the connection", function()
        local value = string.rep("0123456789abcdef", 300 * 64)
        local r = { h.call(app, function()
            local s = socket.tcp()
            assert(s:connect(srv.host, srv.port, { pool = "mc" }))
            assert(s:send({ "set big 0 0 ", #value, "\r\n", value, "\r\n" }))
            local stored = s:receive()
            assert(s:send("get big\r\n"))
            local line = s:receiveuntil("\r\n")()
            local len = tonumber(line:match("^VALUE big 0 (%d+)$"))
            local data = s:receive(len + 2)
            local done = s:receive()
            assert(s:setkeepalive())
            local t = socket.tcp()
            assert(t:connect(srv.host, srv.port, { pool = "mc" }))
            assert(t:send("delete big\r\n"))
            return { stored, len, data == value .. "\r\n", done, t:getreusedtimes(), t:receive() }
        end) }
        assert.same({ "STORED", #value, true, "END", 1, "DELETED" }, r[1])
    end)
end)
