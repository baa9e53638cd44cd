-- moonfcgi.socket's TCP and unix stream sockets (cosocket.md section 2) against the specs'
-- own peer (spec/socket/peer.py): every method and its error texts.
package.path = "spec/support/?.lua;spec/socket/?.lua;" .. package.path
local h = require "helpers"
local process = require "process"
local socket = require "moonfcgi.socket"

describe("moonfcgi.socket tcp", function()
    local peer, app

    setup(function()
        peer = h.start_peer()
        app = h.load({ socket_buffer = 64 * 1024 })
    end)

    teardown(function()
        app:close()
        peer.stop()
    end)

    -- A connected socket to the peer that was told cmd.
    local function open(cmd, host)
        local s = socket.tcp()
        assert(s:connect(host or "127.0.0.1", peer.tcp))
        assert(s:send(cmd .. "\n"))
        return s
    end

    local function run(fn)
        return h.call(app, fn)
    end

    describe("connect", function()
        it("reaches IPv4, IPv6 with and without brackets, and a unix socket", function()
            local r = { run(function()
                local out = {}
                for _, host in ipairs({ "127.0.0.1", "::1", "[::1]" }) do
                    local s = open("send hi-" .. host .. "\\n", host)
                    out[#out + 1] = s:receive()
                    s:close()
                end
                local u = socket.tcp()
                out[#out + 1] = u:connect(peer.unix)
                u:send("send unix\\n\n")
                out[#out + 1] = u:receive()
                u:close()
                return out
            end) }
            assert.same({ "hi-127.0.0.1", "hi-::1", "hi-[::1]", 1, "unix" }, r[1])
        end)

        it("takes the port as a numeric string, and socket.connect in one call", function()
            local a, b = run(function()
                local s = socket.connect("127.0.0.1", tostring(peer.tcp))
                s:send("send x\\n\n")
                local line = s:receive()
                return line, s:close()
            end)
            assert.equal("x", a)
            assert.equal(1, b)
        end)

        it("says bad port number and missing the port number", function()
            local r = { run(function()
                local s = socket.tcp()
                local out = {}
                for _, p in ipairs({ 65536, -1, "http", 1.5 }) do
                    out[#out + 1] = select(2, s:connect("127.0.0.1", p))
                end
                out[#out + 1] = select(2, s:connect("127.0.0.1"))
                out[#out + 1] = select(2, socket.connect("127.0.0.1"))
                return out
            end) }
            assert.same({ "bad port number: 65536", "bad port number: -1", "bad port number: http",
                          "bad port number: 1.5", "missing the port number",
                          "missing the port number" }, r[1])
        end)

        it("reports a refused port and a missing unix socket in strerror's lower-case words",
            function()
                local port = process.free_port()
                local a, b, c, d = run(function()
                    local s = socket.tcp()
                    local ok, err = s:connect("127.0.0.1", port)
                    local ok2, err2 = s:connect("unix:" .. peer.dir .. "/nothing.sock")
                    return ok, err, ok2, err2
                end)
                assert.is_nil(a)
                assert.equal("connection refused", b)
                assert.is_nil(c)
                assert.equal("no such file or directory", d)
            end)

        it("times out on a listener whose queue is full (the SYN gets no answer)", function()
            local ok, err, again = run(function()
                local s = socket.tcp()
                s:settimeout(100)
                local a, b = s:connect("127.0.0.1", peer.tarpit)
                return a, b, select(2, s:send("x"))
            end)
            assert.is_nil(ok)
            assert.equal("timeout", err)
            assert.equal("closed", again)
        end)

        it("fails a name with the resolver's error", function()
            local ok, err = run(function()
                return socket.tcp():connect("no-such-host.invalid", 80)
            end)
            assert.is_nil(ok)
            assert.matches("could not be resolved", err)
        end)

        it("resolves a name from /etc/hosts", function()
            local a = run(function()
                local s = socket.tcp()
                assert(s:connect("localhost", peer.tcp))
                s:send("send named\\n\n")
                return s:receive()
            end)
            assert.equal("named", a)
        end)

        it("a connect timeout while the name resolves cancels the look-up", function()
            -- A name server that never answers (a free port): the connect gives up first, and
            -- the look-up it cancelled must not call back into the closed socket.
            local quiet = h.load({ resolver = "127.0.0.1:" .. process.free_port(),
                                   resolver_timeout = 5 })
            local r = { h.call(quiet, function()
                local s = socket.tcp()
                s:settimeout(100)
                local ok, err = s:connect("nowhere.example", 80)
                return { ok, err, select(2, s:close()) }
            end) }
            quiet:run(0.2)
            quiet:close()
            assert.same({ nil, "timeout", "closed" }, r[1])
        end)

        it("closes the old connection when connecting again", function()
            local a, b = run(function()
                local s = open("send one\\n")
                assert(s:receive() == "one")
                assert(s:connect("127.0.0.1", peer.tcp))
                s:send("send two\\n\n")
                return s:receive(), s:getreusedtimes()
            end)
            assert.equal("two", a)
            assert.equal(0, b)
        end)
    end)

    describe("receive", function()
        it("reads lines without LF and without CRs, *a, sizes and numeric strings", function()
            local r = { run(function()
                local s = open("close a\\r\\nb\\rc\\n12345678rest")
                local out = { s:receive(), s:receive("*l"), s:receive(3), s:receive("2"),
                              s:receive(0), s:receive("*a") }
                out[#out + 1] = select(2, s:receive())
                return out
            end) }
            assert.same({ "a", "bc", "123", "45", "", "678rest", "closed" }, r[1])
        end)

        it("*a at EOF right away gives the empty string", function()
            local a = run(function()
                local s = open("close ")
                return s:receive("*a")
            end)
            assert.equal("", a)
        end)

        it("raises a Lua error for a negative size and a bad pattern", function()
            local out = h.run(app, function()
                local s = open("silent")
                return s:receive(-1)
            end)
            assert.is_false(out.ok)
            assert.matches("bad pattern argument", out[1])
            out = h.run(app, function()
                return open("silent"):receive("*x")
            end)
            assert.is_false(out.ok)
            assert.matches("bad pattern argument", out[1])
        end)

        it("gives nil, closed, partial when the peer closes early", function()
            local r = { run(function()
                local s = open("close part")
                local a, err, partial = s:receive(10)
                return { a, err, partial, select(2, s:receive()), select(2, s:send("x")) }
            end) }
            assert.same({ nil, "closed", "part", "closed", "closed" }, r[1])
        end)

        it("partial data before a line's end", function()
            local r = { run(function()
                local s = open("close no newline")
                return { s:receive() }
            end) }
            assert.same({ nil, "closed", "no newline" }, r[1])
        end)

        it("times out without closing: the socket stays usable", function()
            local r = { run(function()
                local s = open("later 300 late\\n")
                s:settimeout(50)
                local a, err, partial = s:receive()
                s:settimeout(5000)
                local b = s:receive()
                return { a, err, partial, b }
            end) }
            assert.same({ nil, "timeout", "", "late" }, r[1])
        end)

        it("a timeout hands over what arrived so far", function()
            local r = { run(function()
                local s = open("bytes abc")
                s:settimeouts(1000, 1000, 150)
                return { s:receive(100) }
            end) }
            assert.same({ nil, "timeout", "abc" }, r[1])
        end)

        it("assembles lines, sizes and patterns delivered byte by byte", function()
            local r = { run(function()
                local s = open("bytes one\\r\\ntwo--END--three")
                local it = s:receiveuntil("--END--")
                return { s:receive(), s:receive(1), it(), s:receive(5) }
            end) }
            assert.same({ "one", "t", "wo", "three" }, r[1])
        end)

        it("receiveany returns what is there, at most max", function()
            local r = { run(function()
                local s = open("send abcdef")
                local a = s:receiveany(4)
                local b = s:receiveany(100)
                return { a, b }
            end) }
            assert.same({ "abcd", "ef" }, r[1])
            local out = h.run(app, function()
                return open("silent"):receiveany(0)
            end)
            assert.is_false(out.ok)
            assert.matches("bad max argument", out[1])
        end)

        it("bounds an endless line and an endless *a by the buffer limit", function()
            local r = { run(function()
                local a = open("endless")
                local x, err, partial = a:receive()
                local b = open("endless")
                local y, err2 = b:receive("*a")
                local c = open("endless")
                local z, err3 = c:receiveuntil("\r\n")()
                return { x, err, #partial >= 64 * 1024, y, err2, z, err3, select(2, a:receive()) }
            end) }
            assert.same({ nil, "buffer too large", true, nil, "buffer too large", nil,
                          "buffer too large", "closed" }, r[1])
        end)

        it("sizes past the buffer limit still arrive whole", function()
            local n = run(function()
                local s = open("endless")
                return #assert(s:receive(200000))
            end)
            assert.equal(200000, n)
        end)
    end)

    describe("receiveuntil", function()
        it("reads up to the pattern, inclusive or not, and is reusable", function()
            local r = { run(function()
                local s = open("send a--b--c--d--tail")
                local it = s:receiveuntil("--")
                local inc = s:receiveuntil("--", { inclusive = true })
                return { it(), it(), inc(), inc(), s:receive(4) }
            end) }
            assert.same({ "a", "b", "c--", "d--", "tail" }, r[1])
        end)

        it("it(size) gives chunks, then nil, nil at the pattern, then the next part", function()
            local r = { run(function()
                local s = open("send 0123456789\\r\\n--x\\r\\nabc\\r\\n--x\\r\\n")
                local it = s:receiveuntil("\r\n--x\r\n")
                s:settimeout(100)
                local out = {}
                for _ = 1, 7 do
                    local data, err = it(4)
                    out[#out + 1] = data or ("nil:" .. tostring(err))
                end
                return out
            end) }
            assert.same({ "0123", "4567", "89", "nil:nil", "abc", "nil:nil", "nil:timeout" }, r[1])
        end)

        it("finds a pattern split across reads and a pattern whose prefix repeats", function()
            local r = { run(function()
                local s = open("bytes xx--ab--a--abc--abyz")
                local it = s:receiveuntil("--ab")
                return { it(), it(), s:receive(2) }
            end) }
            assert.same({ "xx", "--a", "c-" }, { r[1][1], r[1][2], r[1][3] })
        end)

        it("an empty pattern is nil, pattern is empty; EOF gives closed and the partial", function()
            local r = { run(function()
                local s = open("close abc")
                local it0, e0 = s:receiveuntil("")
                local it = s:receiveuntil("zz")
                return { it0, e0, it() }
            end) }
            assert.same({ nil, "pattern is empty", nil, "closed", "abc" },
                { r[1][1], r[1][2], r[1][3], r[1][4], r[1][5] })
        end)
    end)

    describe("send", function()
        it("sends strings, numbers, booleans, nil and nested arrays; returns the bytes", function()
            local r = { run(function()
                local s = open("echo")
                local out = { s:send(""), s:send({}), s:send(12), s:send(true), s:send(nil),
                              s:send({ "a", { "b", { 1, 2.5 } }, "\n" }) }
                out[#out + 1] = s:receive()
                return out
            end) }
            assert.same({ 0, 0, 2, 4, 3, 7, "12truenilab12.5" }, r[1])
        end)

        it("raises bad data type and non-array table found", function()
            for _, data in ipairs({ { "a", true }, { "a", { nil, "b" } }, { x = 1 }, { print } }) do
                local out = h.run(app, function()
                    return open("silent"):send(data)
                end)
                assert.is_false(out.ok)
                assert.is_truthy(out[1]:find("bad data type", 1, true)
                    or out[1]:find("non-array table found", 1, true), out[1])
            end
            local out = h.run(app, function()
                return open("silent"):send(print)
            end)
            assert.matches("bad data type function found", out[1])
        end)

        it("times out on a peer that reads nothing, and the socket is closed after", function()
            local r = { run(function()
                local s = open("sink")
                s:settimeouts(1000, 100, 1000)
                local big = string.rep("x", 1024 * 1024)
                local n, err
                for _ = 1, 64 do
                    n, err = s:send(big)
                    if not n then
                        break
                    end
                end
                return { n, err, select(2, s:send("x")), select(2, s:receive()) }
            end) }
            assert.same({ nil, "timeout", "closed", "closed" }, r[1])
        end)

        it("a peer that closed gives an error and closes the socket", function()
            local r = { run(function()
                local s = open("close ")
                assert(s:receive("*a") == "")
                return { select(2, s:send("x")), select(2, s:close()) }
            end) }
            assert.same({ "closed", "closed" }, r[1])
        end)
    end)

    describe("the other methods", function()
        it("setoption sets the five options; getreusedtimes; close twice", function()
            local r = { run(function()
                local s = open("silent")
                local out = {}
                for _, o in ipairs({ { "keepalive", true }, { "reuseaddr", 1 },
                                     { "tcp-nodelay", true }, { "sndbuf", 65536 },
                                     { "rcvbuf", 65536 } }) do
                    out[#out + 1] = s:setoption(o[1], o[2])
                end
                out[#out + 1] = select(2, s:setoption("nope", 1))
                out[#out + 1] = s:getreusedtimes()
                out[#out + 1] = s:close()
                out[#out + 1] = select(2, s:close())
                out[#out + 1] = select(2, s:getreusedtimes())
                out[#out + 1] = select(2, s:setoption("keepalive", true))
                return out
            end) }
            assert.same({ 1, 1, 1, 1, 1, 'unsupported option "nope"', 0, 1, "closed", "closed",
                          "closed" }, r[1])
        end)

        it("settimeout rejects a negative value with a Lua error", function()
            local out = h.run(app, function()
                socket.tcp():settimeout(-1)
            end)
            assert.is_false(out.ok)
            assert.matches("bad timeout value", out[1])
        end)

        it("two coroutines on one socket get socket busy reading/writing/connecting", function()
            local r = { run(function()
                local s = open("later 200 x\\n")
                local co = coroutine.wrap(function()
                    return s:receive()
                end)
                local busy = {}
                local ok, err
                local th = coroutine.create(function()
                    local a, b = s:receive()
                    return a, b
                end)
                -- A second reader while the first waits: needs the scheduler's nested
                -- coroutines; without them this checks the flag directly.
                local _ = co
                s._st.reading = true
                ok, err = s:receive()
                busy[#busy + 1] = err
                s._st.reading = nil
                s._st.writing = true
                ok, err = s:send("x")
                busy[#busy + 1] = err
                s._st.writing = nil
                s._st.connecting = true
                ok, err = s:connect("127.0.0.1", peer.tcp)
                busy[#busy + 1] = err
                s._st.connecting = nil
                local _ = th
                return busy
            end) }
            assert.same({ "socket busy reading", "socket busy writing", "socket busy connecting" },
                r[1])
        end)

        it("a socket used from another request raises bad request", function()
            local kept
            run(function()
                kept = open("silent")
            end)
            local out = h.run(app, function()
                return kept:receive()
            end)
            assert.is_false(out.ok)
            assert.matches("bad request", out[1])
        end)

        it("outside a handler: nil and an error, no crash", function()
            local s = socket.tcp()
            local ok, err = s:connect("127.0.0.1", peer.tcp)
            assert.is_nil(ok)
            assert.equal("cosockets are not available outside a handler", err)
        end)
    end)
end)
