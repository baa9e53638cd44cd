-- moonfcgi.socket's UDP sockets (cosocket.md section 2) against the specs' peer, which echoes
-- each datagram back as "echo:" .. datagram and ignores "silent".
package.path = "spec/support/?.lua;spec/socket/?.lua;" .. package.path
local h = require "helpers"
local process = require "process"
local socket = require "moonfcgi.socket"

describe("moonfcgi.socket udp", function()
    local peer, app

    setup(function()
        peer = h.start_peer()
        app = h.load()
    end)

    teardown(function()
        app:close()
        peer.stop()
    end)

    it("sends a datagram (strings, numbers, arrays) and receives one", function()
        local r = { h.call(app, function()
            local u = socket.udp()
            local out = { u:setpeername("127.0.0.1", tostring(peer.udp)) }
            out[#out + 1] = u:send({ "a", { 1, "b" } })
            out[#out + 1] = u:receive()
            out[#out + 1] = u:send("hello")
            out[#out + 1] = u:receive(7)
            out[#out + 1] = u:close()
            out[#out + 1] = select(2, u:close())
            out[#out + 1] = select(2, u:send("x"))
            out[#out + 1] = select(2, u:receive())
            return out
        end) }
        assert.same({ 1, 1, "echo:a1b", 1, "echo:he", 1, "closed", "closed", "closed" }, r[1])
    end)

    it("a receive timeout is not fatal", function()
        local r = { h.call(app, function()
            local u = socket.udp()
            u:settimeout(50)
            assert(u:setpeername("127.0.0.1", peer.udp))
            u:send("silent")
            local a, err = u:receive()
            u:settimeout(5000)
            u:send("again")
            return { a, err, u:receive() }
        end) }
        assert.same({ nil, "timeout", "echo:again" }, r[1])
    end)

    it("checks the port like TCP and reports a refused port on receive", function()
        local port = process.free_port()
        local r = { h.call(app, function()
            local u = socket.udp()
            local out = { select(2, u:setpeername("127.0.0.1")),
                          select(2, u:setpeername("127.0.0.1", 70000)) }
            assert(u:setpeername("127.0.0.1", port))
            u:settimeout(1000)
            u:send("anyone?")
            out[#out + 1] = select(2, u:receive())
            return out
        end) }
        assert.same({ "missing the port number", "bad port number: 70000",
                      "connection refused" }, r[1])
    end)

    it("setpeername to a unix datagram path that does not exist fails", function()
        local a, err = h.call(app, function()
            return socket.udp():setpeername("unix:" .. peer.dir .. "/none.sock")
        end)
        assert.is_nil(a)
        assert.equal("no such file or directory", err)
    end)
end)
