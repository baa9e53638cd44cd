-- The socket layer against PostgreSQL's framing (issue 10): a real server started by the spec
-- (spec/support/upstreams.lua), spoken to over raw sockets as pgmoon does: sized reads of a
-- type byte, a length and a body, the port as a numeric string.
package.path = "spec/support/?.lua;spec/socket/?.lua;" .. package.path
local h = require "helpers"
local upstreams = require "upstreams"
local socket = require "moonfcgi.socket"

local function int32(n)
    return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
        math.floor(n / 256) % 256, n % 256)
end

local function read_int32(s)
    local a, b, c, d = s:byte(1, 4)
    return ((a * 256 + b) * 256 + c) * 256 + d
end

-- One message: its type and body, or nil, err.
local function message(sock)
    local t, err = sock:receive(1)
    if not t then
        return nil, err
    end
    local len = read_int32(assert(sock:receive(4)))
    return t, len > 4 and assert(sock:receive(len - 4)) or ""
end

local function startup(sock, user, db)
    local body = { int32(196608), "user\0", user, "\0database\0", db, "\0\0" }
    local n = 4 + 4 + #"user\0" + #user + #"\0database\0" + #db + 2
    return sock:send({ int32(n), body })
end

describe("moonfcgi.socket and PostgreSQL", function()
    local srv, app

    setup(function()
        srv = assert(upstreams.postgres())
        app = h.load()
    end)

    teardown(function()
        app:close()
        srv:stop()
    end)

    it("starts up over the unix socket, runs a simple query and reads its rows", function()
        local r = { h.call(app, function()
            local sock = socket.tcp()
            assert(sock:connect("unix:" .. srv.socket))
            assert(startup(sock, "postgres", "postgres"))
            local types = {}
            repeat
                local t = assert(message(sock))
                types[#types + 1] = t
            until t == "Z"
            local q = "SELECT 40 + 2 AS answer\0"
            assert(sock:send({ "Q", int32(4 + #q), q }))
            local row
            repeat
                local t, body = assert(message(sock))
                if t == "D" then
                    local len = read_int32(body:sub(3, 6))
                    row = body:sub(7, 6 + len)
                end
            until t == "Z"
            assert(sock:send({ "X", int32(4) }))
            return types[1], row, sock:close()
        end) }
        assert.equal("R", r[1])
        assert.equal("42", r[2])
        assert.equal(1, r[3])
    end)

    it("over TCP (the port as a string) the server asks for SCRAM-SHA-256", function()
        local r = { h.call(app, function()
            local sock = socket.tcp()
            assert(sock:connect(srv.host, tostring(srv.port)))
            assert(startup(sock, srv.user, srv.database))
            local t, body = assert(message(sock))
            return { t, read_int32(body:sub(1, 4)), body:match("SCRAM%-SHA%-256") }
        end) }
        assert.same({ "R", 10, "SCRAM-SHA-256" }, r[1])
    end)
end)
