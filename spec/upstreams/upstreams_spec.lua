-- The upstream servers of spec/support/upstreams.lua start, answer, and stop without leaving a
-- process or a folder behind; Debian's OpenResty libraries are unpacked and are the packages'
-- own files. Checked with the servers' own clients (redis-cli, psql, curl) or raw sockets.
package.path = "spec/support/?.lua;" .. package.path
local upstreams = require "upstreams"

local function dir_exists(dir)
    return upstreams.sh("test -d '" .. dir .. "'") == 0
end

-- After :stop(): the pid is gone (reaped), no process names the folder, the folder is gone.
local function assert_gone(srv, dir, pid)
    assert.is_false(upstreams.alive(pid))
    assert.same({}, upstreams.processes_in(dir))
    assert.is_false(dir_exists(dir))
end

describe("upstreams.redis", function()
    local srv
    after_each(function()
        if srv then
            srv:stop()
        end
        srv = nil
    end)

    it("answers on TCP and on its unix socket, and stops by pid", function()
        srv = assert(upstreams.redis())
        assert.equal("PONG", srv:cli("PING"))
        assert.equal("+PONG\r\n", upstreams.tcp_exchange(srv.host, srv.port, "PING\r\n", "\r\n"))
        local st, out = upstreams.run({ "redis-cli", "-s", srv.socket, "SET", "k", "via-unix" })
        assert.equal(0, st, out)
        assert.equal("via-unix", srv:cli("GET", "k"))
        assert.equal("unix:" .. srv.socket, srv.unix)
        local dir, pid = srv.dir, srv.pid
        assert.is_true(upstreams.alive(pid))
        srv:stop()
        srv = nil
        assert_gone(nil, dir, pid)
    end)

    it("can be killed and comes back on the same port", function()
        srv = assert(upstreams.redis())
        local port = srv.port
        assert.equal("OK", srv:cli("SET", "k", "1"))
        local old = srv.pid
        assert.equal(128 + 9, srv:kill())
        assert.is_false(upstreams.alive(old))
        assert.is_nil((srv:cli("PING")))
        assert(srv:restart())
        assert.equal(port, srv.port)
        assert.equal("PONG", srv:cli("PING"))
        -- Nothing is saved: it comes back empty.
        assert.equal("", srv:cli("GET", "k"))
    end)

    it("takes a password", function()
        srv = assert(upstreams.redis({ password = "s3cret" }))
        assert.equal("PONG", srv:cli("PING"))
        assert.matches("NOAUTH", upstreams.tcp_exchange(srv.host, srv.port, "PING\r\n", "\r\n"))
    end)

    it("fails loudly with Redis's own words when it cannot start", function()
        local s, err = upstreams.redis({ config = { "no-such-directive yes" } })
        assert.is_nil(s)
        assert.matches("no%-such%-directive", err)
    end)
end)

describe("upstreams.memcached", function()
    it("stores and returns a value over TCP, then stops", function()
        local srv = assert(upstreams.memcached())
        local ok, out = pcall(function()
            assert.equal("STORED\r\n", upstreams.tcp_exchange(srv.host, srv.port,
                "set k 0 0 5\r\nhello\r\n", "\r\n"))
            return upstreams.tcp_exchange(srv.host, srv.port, "get k\r\n", "END\r\n")
        end)
        local dir, pid = srv.dir, srv.pid
        srv:stop()
        assert(ok, out)
        assert.equal("VALUE k 0 5\r\nhello\r\nEND\r\n", out)
        assert_gone(nil, dir, pid)
    end)
end)

describe("upstreams.postgres", function()
    local srv
    setup(function()
        srv = assert(upstreams.postgres())
    end)
    teardown(function()
        if srv then
            local dir, pid = srv.dir, srv.pid
            srv:stop()
            -- The postmaster's own children (checkpointer, walwriter, ...) are gone too.
            assert_gone(nil, dir, pid)
        end
    end)

    it("lets the created user in over TCP with its password", function()
        assert.equal("moonfcgi|2", srv:psql("SELECT current_user, 1 + 1"))
        assert.equal(srv.database, srv:psql("SELECT current_database()"))
    end)

    it("stores the password as scram-sha-256 and refuses a wrong one", function()
        local pw = srv:psql("SELECT rolpassword FROM pg_authid WHERE rolname = '" .. srv.user .. "'",
            true)
        assert.matches("^SCRAM%-SHA%-256%$", pw)
        local saved = srv.password
        srv.password = "wrong"
        local ok, err = srv:psql("SELECT 1")
        srv.password = saved
        assert.is_nil(ok)
        assert.matches("password authentication failed", err)
    end)

    it("listens on a unix socket in its socket folder", function()
        assert.equal(0, (upstreams.sh("test -S '" .. srv.socket .. "'")))
        assert.equal("1", srv:psql("SELECT 1", true))
    end)

    it("does not run as root", function()
        local status = assert(require("servers").read_file("/proc/" .. srv.pid .. "/status"))
        local uid = tonumber(status:match("\nUid:%s+(%d+)"))
        assert.is_number(uid)
        assert.not_equal(0, uid)
    end)
end)

describe("upstreams.dnsmasq", function()
    local srv, D
    setup(function()
        srv = assert(upstreams.dnsmasq())
        D = srv.names
    end)
    teardown(function()
        if srv then
            local dir, pid = srv.dir, srv.pid
            srv:stop()
            assert_gone(nil, dir, pid)
        end
    end)

    local function ask(name, qtype, opts)
        return assert(upstreams.dns_query(srv.host, srv.port, name, qtype, opts))
    end

    it("answers A and AAAA from its own hosts file with the configured TTL", function()
        local a = ask(D.a, "A")
        assert.equal(0, a.rcode)
        assert.equal("127.0.0.1", a.answers[1].address)
        assert.equal(upstreams.DNS.ttl, a.answers[1].ttl)
        assert.equal("0:0:0:0:0:0:0:1", ask(D.a, "AAAA").answers[1].address)
        assert.equal(0, #ask(D.v4, "AAAA").answers)
        assert.equal(0, #ask(D.v6, "A").answers)
    end)

    it("answers CNAME, SRV and TXT", function()
        local c = ask(D.cname, "A")
        assert.equal(D.a, c.answers[1].cname)
        assert.equal("127.0.0.1", c.answers[2].address)
        local s = ask(D.srv, "SRV").answers[1]
        assert.same({ 10, 20, 6379, D.a }, { s.priority, s.weight, s.port, s.target })
        assert.equal(upstreams.DNS.txt_value, ask(D.txt, "TXT").answers[1].txt)
    end)

    it("gives one name a TTL of one second", function()
        assert.equal(1, ask(D.short, "A").answers[1].ttl)
    end)

    it("answers NXDOMAIN for an unknown name of its zone", function()
        local r = ask(D.missing, "A")
        assert.equal(3, r.rcode)
        assert.equal(0, #r.answers)
    end)

    it("truncates a large answer over UDP and gives all of it over TCP", function()
        local u = ask(D.many, "A")
        assert.is_true(u.tc)
        local t = ask(D.many, "A", { tcp = true })
        assert.is_false(t.tc)
        assert.equal(60, #t.answers)
    end)

    it("never answers a name under slow.example", function()
        local r, err = upstreams.dns_query(srv.host, srv.port, "x." .. D.slow, "A", { timeout = 1 })
        assert.is_nil(r)
        assert.equal("timeout", err)
    end)

    it("logs the queries it receives", function()
        local before = srv:queries(D.v4, "A")
        ask(D.v4, "A")
        assert.equal(before + 1, srv:queries(D.v4, "A"))
    end)
end)

describe("upstreams.https", function()
    local srv
    setup(function()
        srv = assert(upstreams.https())
    end)
    teardown(function()
        if srv then
            local dir, pid = srv.dir, srv.pid
            srv:stop()
            assert_gone(nil, dir, pid)
        end
    end)

    local function curl(kind, host, extra)
        local scheme = kind == "http" and "http" or "https"
        return upstreams.sh(("curl -sS --max-time 10 --cacert '%s' %s %s://%s:%d/"):format(
            srv.ca_file, extra or "", scheme, host or "localhost", srv.ports[kind]))
    end

    it("serves HTTP and HTTPS with a certificate the CA vouches for", function()
        assert.same({ 0, "http\n" }, { curl("http") })
        assert.same({ 0, "good\n" }, { curl("good") })
        assert.same({ 0, "good\n" }, { curl("good", "127.0.0.1") })
        if srv.ipv6 then
            assert.same({ 0, "good\n" }, { curl("good", "[::1]") })
        end
    end)

    it("has a wrong host name, an unknown CA and an expired certificate", function()
        local rc, out = curl("wrong_host")
        assert.equal(60, rc)
        assert.matches("subject name", out)
        rc, out = curl("unknown_ca")
        assert.equal(60, rc)
        assert.matches("local issuer", out)
        rc, out = curl("expired")
        assert.equal(60, rc)
        assert.matches("expired", out)
        -- The same three verify with their own name / CA / no check: they are real TLS.
        assert.same({ 0, "wrong_host\n" }, { curl("wrong_host", nil, "-k") })
        assert.same({ 0, "unknown_ca\n" }, { curl("unknown_ca", nil,
            "--cacert '" .. srv.other_ca_file .. "'") })
        assert.same({ 0, "expired\n" }, { curl("expired", nil, "-k") })
    end)
end)

describe("upstreams.fetch_debs", function()
    local f
    local saved = package.path
    setup(function()
        f = assert(upstreams.fetch_debs())
        package.path = f.path .. package.path
    end)
    teardown(function()
        package.path = saved
    end)

    it("unpacks each package and finds its modules, byte for byte the package's", function()
        local mods = {
            ["nginx.redis"] = "lua-nginx-redis",
            ["nginx.memcached"] = "lua-nginx-memcached",
            ["nginx.dns.resolver"] = "lua-nginx-dns",
            ["nginx.websocket.client"] = "lua-nginx-websocket",
            ["nginx.string"] = "lua-nginx-string",
            ["nginx.kafka.producer"] = "lua-nginx-kafka",
            ["nginx.redis.connector"] = "lua-nginx-redis-connector",
            ["resty.lrucache"] = "lua-resty-lrucache",
        }
        for mod, pkg in pairs(mods) do
            local path, got = upstreams.check_module(mod)
            assert(path, got)
            assert.equal(f.lua_dir, path:sub(1, #f.lua_dir))
            assert.equal(pkg, got)
        end
    end)

    it("refuses a file that is not from the packages", function()
        local ok, err = upstreams.deb_file_check("spec/support/upstreams.lua")
        assert.is_nil(ok)
        assert.matches("is not under", err)
    end)
end)
