-- Real upstream servers for the socket specs: Redis, memcached, PostgreSQL, dnsmasq and an
-- nginx serving HTTPS with certificates made here, each started by the spec on a free
-- loopback port (and unix socket) in a temp folder of its own and stopped by pid; and
-- Debian's OpenResty Lua libraries, unpacked (never installed) for package.path.
--
--   package.path = "spec/support/?.lua;" .. package.path
--   local upstreams = require "upstreams"
--   local redis = assert(upstreams.redis())
--   -- redis.host, redis.port, redis.addr ("127.0.0.1:PORT"), redis.socket ("/tmp/.../redis.sock")
--   redis:stop()
--
-- Every starter returns the server, or nil and an error that includes the server's own
-- output when it does not start in time (opts.start_timeout seconds, default 15): a missing
-- server fails the spec, it never makes it pending. Every server has :stop() (SIGTERM, then
-- SIGKILL after a grace period, by pid; then its folder is removed), :output() (what it
-- printed), .dir and .pid. Started as root, servers that refuse root run as an unprivileged
-- user. upstreams.processes_in(dir) lists the pids whose command line names a folder, so a
-- spec can check that nothing was left behind.
local ffi = require "ffi"
local bit = require "bit"
local servers = require "servers"
local process = require "process"
local client = require "moonfcgi.client"

local format, concat = string.format, table.concat
local q = servers.quote
local io_open, io_popen, os_execute, os_getenv = io.open, io.popen, os.execute, os.getenv

pcall(ffi.cdef, [[
struct mf_up_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8]; };
struct mf_up_sockaddr_in6 { uint16_t family; uint16_t port; uint32_t flowinfo;
                            uint8_t addr[16]; uint32_t scope_id; };
struct mf_up_pollfd { int fd; short events; short revents; };
int mf_up_socket(int, int, int) __asm__("socket");
int mf_up_bind(int, const void *, uint32_t) __asm__("bind");
int mf_up_connect(int, const void *, uint32_t) __asm__("connect");
int mf_up_getsockname(int, void *, uint32_t *) __asm__("getsockname");
int mf_up_close(int) __asm__("close");
long mf_up_send(int, const void *, size_t, int) __asm__("send");
long mf_up_recv(int, void *, size_t, int) __asm__("recv");
int mf_up_poll(struct mf_up_pollfd *, unsigned long, int) __asm__("poll");
int mf_up_kill(int, int) __asm__("kill");
]])
local C = ffi.C

local AF_INET, AF_INET6, SOCK_STREAM, SOCK_DGRAM = 2, 10, 1, 2
local POLLIN, POLLOUT = 1, 4

local _M = {}

_M.PG_BIN = os_getenv("MOONFCGI_PG_BIN") or "/usr/lib/postgresql/15/bin"

-- Helpers ------------------------------------------------------------------------------------

local function sleep(s)
    C.mf_up_poll(nil, 0, s * 1000)
end

local function exists(path)
    local f = io_open(path, "rb")
    if f then
        f:close()
        return true
    end
    return false
end

-- Runs a shell command (killed past two minutes); returns its exit status and its output
-- (stdout and stderr). Without the sanitizer runtime the ASan suite preloads into busted:
-- curl hangs with it.
local function sh(cmd)
    local p = io_popen("unset LD_PRELOAD ASAN_OPTIONS; timeout -s KILL 120 sh -c "
        .. q(cmd .. " 2>&1") .. " 2>&1; echo \"mf-rc=$?\"")
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("mf%-rc=(%d+)\n?$"))
    return rc, (out:gsub("mf%-rc=%d+\n?$", ""))
end
_M.sh = sh

-- Runs argv as a child (process.spawn, no shell), bounded by `timeout` seconds; returns the
-- exit status (nil if it had to be killed) and its output.
local function run(argv, timeout, env)
    local p, err = process.spawn(argv, { env = env })
    if not p then
        return nil, err
    end
    local st = p:wait(timeout or 30)
    if st == nil then
        p:stop(1)
    end
    local out = p:output()
    os.remove(p.log)
    return st, out
end
_M.run = run

local function user_ids(user)
    local _, uid = sh("id -u " .. q(user))
    local _, gid = sh("id -g " .. q(user))
    return tonumber(uid), tonumber(gid)
end

-- argv run as `user` when we are root (setpriv execs: the pid stays the server's own).
local function as_user(user, argv)
    if not user then
        return argv
    end
    local uid, gid = user_ids(user)
    local out = { "setpriv", "--reuid=" .. uid, "--regid=" .. gid, "--init-groups", "--" }
    for _, a in ipairs(argv) do
        out[#out + 1] = a
    end
    return out
end

-- The unprivileged user for servers that refuse root, or nil when we are not root.
local function server_user(preferred)
    if not servers.is_root() then
        return nil
    end
    if preferred and sh("id -u " .. q(preferred) .. " >/dev/null") == 0 then
        return preferred
    end
    return "nobody"
end

local function chown(user, ...)
    if user then
        for _, path in ipairs({ ... }) do
            os_execute(format("chown -R %s %s", q(user), q(path)))
        end
    end
end

local function write(path, text, mode)
    servers.write_file(path, text)
    os_execute(format("chmod %s %s", mode or "644", q(path)))
end

-- Pids (other than ours) whose command line mentions `text` (a server's folder).
function _M.processes_in(text)
    local pids = {}
    local p = io_popen("ls /proc")
    for name in p:read("*a"):gmatch("%d+") do
        local f = io_open("/proc/" .. name .. "/cmdline", "rb")
        if f then
            local cmd = f:read("*a") or ""
            f:close()
            if cmd:find(text, 1, true) and not cmd:find("mf-rc=", 1, true) then
                pids[#pids + 1] = tonumber(name)
            end
        end
    end
    p:close()
    return pids
end

-- Whether a process with this pid exists (a zombie counts until it is reaped).
function _M.alive(pid)
    return C.mf_up_kill(pid, 0) == 0
end

local function sockaddr(host, port)
    if host:find(":", 1, true) then
        local sa = ffi.new("struct mf_up_sockaddr_in6")
        sa.family = AF_INET6
        sa.port = bit.rshift(bit.bswap(port), 16)
        assert(host == "::1", "only ::1 is supported")
        sa.addr[15] = 1
        return sa, ffi.sizeof(sa), AF_INET6
    end
    local sa = ffi.new("struct mf_up_sockaddr_in")
    sa.family = AF_INET
    sa.port = bit.rshift(bit.bswap(port), 16)
    local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    sa.addr[0], sa.addr[1] = tonumber(a), tonumber(b)
    sa.addr[2], sa.addr[3] = tonumber(c), tonumber(d)
    return sa, ffi.sizeof(sa), AF_INET
end

-- A socket bound to host:port (0: any); returns fd, port or nil.
local function bound(host, port, socktype)
    local sa, len, family = sockaddr(host, port)
    local fd = C.mf_up_socket(family, socktype, 0)
    if fd < 0 then
        return nil
    end
    if C.mf_up_bind(fd, sa, len) ~= 0 then
        C.mf_up_close(fd)
        return nil
    end
    local l = ffi.new("uint32_t[1]", len)
    C.mf_up_getsockname(fd, sa, l)
    return fd, bit.rshift(bit.bswap(sa.port), 16)
end

-- Whether ::1 can be bound here (servers then listen on it too).
function _M.have_ipv6()
    local fd = bound("::1", 0, SOCK_STREAM)
    if fd then
        C.mf_up_close(fd)
        return true
    end
    return false
end

-- A loopback port free for both TCP and UDP (a DNS server needs both).
local function free_port_both()
    for _ = 1, 50 do
        local port = process.free_port()
        local fd = bound("127.0.0.1", port, SOCK_DGRAM)
        if fd then
            C.mf_up_close(fd)
            return port
        end
    end
    error("no free port for TCP and UDP")
end

-- One exchange over TCP with host:port: sends `data`, reads until the answer matches
-- `pattern` (a Lua pattern) or the peer closes, bounded by `timeout` seconds. Returns what
-- was read, or nil, err (and what was read). For plain checks of text protocols.
function _M.tcp_exchange(host, port, data, pattern, timeout)
    local sa, len, family = sockaddr(host, port)
    local fd = C.mf_up_socket(family, SOCK_STREAM, 0)
    if fd < 0 then
        return nil, "socket failed"
    end
    if C.mf_up_connect(fd, sa, len) ~= 0 then
        C.mf_up_close(fd)
        return nil, "connect failed: " .. ffi.errno()
    end
    if #data > 0 and C.mf_up_send(fd, data, #data, 0) ~= #data then
        C.mf_up_close(fd)
        return nil, "send failed"
    end
    local deadline = client.now() + (timeout or 5)
    local got, buf = {}, ffi.new("char[4096]")
    local pfd = ffi.new("struct mf_up_pollfd[1]")
    local err = "timeout"
    while client.now() < deadline do
        pfd[0].fd, pfd[0].events = fd, POLLIN
        if C.mf_up_poll(pfd, 1, 50) > 0 then
            local n = tonumber(C.mf_up_recv(fd, buf, 4096, 0))
            if n <= 0 then
                err = "closed"
                break
            end
            got[#got + 1] = ffi.string(buf, n)
            if pattern and concat(got):find(pattern) then
                C.mf_up_close(fd)
                return concat(got)
            end
        end
    end
    C.mf_up_close(fd)
    if not pattern and err == "closed" then
        return concat(got)
    end
    return nil, err, concat(got)
end

-- A server we started ------------------------------------------------------------------------

local Server = {}
Server.__index = Server

function Server:output()
    return self.proc and self.proc:output() or ""
end

function Server:running()
    return self.proc ~= nil and self.proc:running()
end

local function remove_dir(dir)
    if dir and dir:match("^/tmp/moonfcgi%-[%w]+%.") then
        os_execute("rm -rf " .. q(dir))
    end
end

-- Stops the process (SIGTERM, SIGKILL past `grace`), removes the folder; returns the status.
function Server:stop(grace)
    local st = self.status
    if self.proc then
        st = self.proc:stop(grace or 5)
        os.remove(self.proc.log)
        self.proc = nil
    end
    self.status = st
    if self.on_stop then
        self.on_stop(self)
    end
    if not self.keep_dir then
        remove_dir(self.dir)
    end
    return st
end

-- Spawns argv, then waits (bounded) until ready() returns true; the process exiting first,
-- or the time running out, is an error carrying the server's output.
local function start(srv, argv, ready, timeout, env)
    local e = { LD_PRELOAD = false, ASAN_OPTIONS = false, UBSAN_OPTIONS = false }
    for k, v in pairs(env or {}) do
        e[k] = v
    end
    local proc, err = process.spawn(argv, { env = e, log = srv.dir .. "/stdout.log" })
    if not proc then
        return nil, err
    end
    srv.proc, srv.pid = proc, proc.pid
    local deadline = client.now() + (timeout or 15)
    local why
    repeat
        if not proc:running() then
            return nil, format("%s exited with status %s:\n%s", srv.name, tostring(proc.status),
                proc:output())
        end
        local ok
        ok, why = ready(srv)
        if ok then
            return srv
        end
        sleep(0.05)
    until client.now() >= deadline
    return nil, format("%s not ready after %ss (%s):\n%s", srv.name, tostring(timeout or 15),
        tostring(why), proc:output())
end

-- Runs start(); on failure stops what was started and returns nil, err.
local function start_or_clean(srv, argv, ready, timeout, env)
    local ok, err = start(srv, argv, ready, timeout, env)
    if not ok then
        srv:stop(1)
        return nil, err
    end
    return srv
end

local function new_server(name, opts)
    local dir, err = servers.make_dir(name)
    if not dir then
        return nil, err
    end
    return setmetatable({ name = name, dir = dir, keep_dir = opts and opts.keep_dir }, Server)
end

local function connectable(addr)
    local c = client.connect(addr, { timeout = 1 })
    if c then
        c:close()
        return true
    end
    return false, "not accepting on " .. addr
end

-- Redis --------------------------------------------------------------------------------------

local Redis = setmetatable({}, { __index = Server })
Redis.__index = Redis

local function redis_ready(srv)
    local ok, err = connectable(srv.addr)
    if not ok then
        return ok, err
    end
    return connectable("unix:" .. srv.socket)
end

local function redis_spawn(srv, timeout)
    return start(srv, { "redis-server", srv.conf_path }, redis_ready, timeout)
end

-- Starts redis-server on 127.0.0.1:PORT and a unix socket at once. opts.password sets
-- requirepass; opts.config: extra configuration lines. The server: .host, .port, .addr,
-- .socket (the path), .unix ("unix:" .. path), :cli(...), :kill(), :restart().
function _M.redis(opts)
    opts = opts or {}
    local srv, err = new_server("redis", opts)
    if not srv then
        return nil, err
    end
    setmetatable(srv, Redis)
    srv.host, srv.port = "127.0.0.1", opts.port or process.free_port()
    srv.addr = srv.host .. ":" .. srv.port
    srv.socket = srv.dir .. "/redis.sock"
    srv.unix = "unix:" .. srv.socket
    srv.password = opts.password
    local conf = {
        "port " .. srv.port,
        "bind 127.0.0.1",
        "protected-mode no",
        "unixsocket " .. srv.socket,
        "unixsocketperm 777",
        "dir " .. srv.dir,
        "daemonize no",
        "save \"\"",
        "appendonly no",
        "logfile \"\"",
        "loglevel notice",
    }
    if opts.password then
        conf[#conf + 1] = "requirepass " .. opts.password
    end
    for _, line in ipairs(opts.config or {}) do
        conf[#conf + 1] = line
    end
    srv.conf_path = srv.dir .. "/redis.conf"
    write(srv.conf_path, concat(conf, "\n") .. "\n")
    srv.start_timeout = opts.start_timeout
    local ok, serr = redis_spawn(srv, opts.start_timeout)
    if not ok then
        local out = srv:output()
        srv:stop(1)
        return nil, serr .. "\n" .. out
    end
    return srv
end

-- redis-cli against this server over TCP: :cli("SET", "k", "v") returns the output without
-- its last newline, or nil, output when redis-cli fails.
function Redis:cli(...)
    local argv = { "redis-cli", "-h", self.host, "-p", tostring(self.port) }
    if self.password then
        argv[#argv + 1] = "--no-auth-warning"
        argv[#argv + 1] = "-a"
        argv[#argv + 1] = self.password
    end
    for _, a in ipairs({ ... }) do
        argv[#argv + 1] = tostring(a)
    end
    local st, out = run(argv, 10)
    out = (out or ""):gsub("\n$", "")
    if st ~= 0 then
        return nil, out
    end
    return out
end

-- SIGKILL: Redis is gone at once, its clients see their connections reset or closed.
function Redis:kill()
    if self.proc then
        self.proc:signal(process.SIGKILL)
        self.status = self.proc:wait(10)
        os.remove(self.proc.log)
        self.proc = nil
    end
    return self.status
end

-- Starts Redis again on the same port and socket (after :kill() or :stop_only()); returns
-- the server or nil, err.
function Redis:restart()
    if self.proc then
        self:stop_only()
    end
    os.remove(self.socket)
    local ok, err = redis_spawn(self, self.start_timeout)
    if not ok then
        return nil, err .. "\n" .. self:output()
    end
    return self
end

-- SIGTERM without removing the folder (so :restart() can follow).
function Redis:stop_only()
    if self.proc then
        self.status = self.proc:stop(5)
        os.remove(self.proc.log)
        self.proc = nil
    end
    return self.status
end

-- memcached ------------------------------------------------------------------------------------

-- Starts memcached on 127.0.0.1:PORT (TCP; UDP off). The server: .host, .port, .addr.
function _M.memcached(opts)
    opts = opts or {}
    local srv, err = new_server("memcached", opts)
    if not srv then
        return nil, err
    end
    srv.host, srv.port = "127.0.0.1", process.free_port()
    srv.addr = srv.host .. ":" .. srv.port
    local argv = { "memcached", "-l", srv.host, "-p", tostring(srv.port), "-U", "0",
                   "-m", tostring(opts.memory_mb or 64), "-c", "1024" }
    local user = server_user("memcache")
    if user then
        -- memcached refuses to run as root unless told whom to become.
        argv[#argv + 1] = "-u"
        argv[#argv + 1] = user
    end
    return start_or_clean(srv, argv, function(s)
        return connectable(s.addr)
    end, opts.start_timeout)
end

-- PostgreSQL -----------------------------------------------------------------------------------

local PgServer = setmetatable({}, { __index = Server })
PgServer.__index = PgServer

-- Starts a PostgreSQL 15 cluster made by initdb in a temp folder: 127.0.0.1:PORT and a unix
-- socket in .socket_dir, scram-sha-256 password authentication for the user it creates
-- (.user, .password, owner of .database); the superuser "postgres" is trusted on the unix
-- socket only (for set-up). Run as an unprivileged user when we are root (initdb and
-- postgres refuse root). The server: .host, .port, .addr, .socket_dir, .socket (the socket
-- file), .user, .password, .database, :psql(sql [, as_superuser]).
function _M.postgres(opts)
    opts = opts or {}
    local srv, err = new_server("postgres", opts)
    if not srv then
        return nil, err
    end
    setmetatable(srv, PgServer)
    local user = server_user("postgres")
    srv.host, srv.port = "127.0.0.1", process.free_port()
    srv.addr = srv.host .. ":" .. srv.port
    srv.data = srv.dir .. "/data"
    srv.socket_dir = srv.dir .. "/sock"
    srv.socket = srv.socket_dir .. "/.s.PGSQL." .. srv.port
    srv.user = opts.user or "moonfcgi"
    srv.password = opts.password or "moonfcgi-secret"
    srv.database = opts.database or "moonfcgi"
    os_execute(format("mkdir -p %s %s", q(srv.data), q(srv.socket_dir)))
    os_execute(format("chmod 700 %s", q(srv.data)))
    chown(user, srv.data, srv.socket_dir)
    local env = { LC_ALL = "C", LANG = "C" }

    local st, out = run(as_user(user, { _M.PG_BIN .. "/initdb", "-D", srv.data, "-U", "postgres",
        "-E", "UTF8", "--locale=C", "--no-sync", "--auth-local=trust",
        "--auth-host=scram-sha-256" }), 120, env)
    if st ~= 0 then
        srv:stop()
        return nil, "initdb failed (status " .. tostring(st) .. "):\n" .. tostring(out)
    end
    write(srv.data .. "/pg_hba.conf", concat({
        "# moonfcgi specs: the superuser on the socket for set-up, passwords everywhere else.",
        "local all postgres trust",
        "local all all scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
    }, "\n") .. "\n", "600")
    chown(user, srv.data .. "/pg_hba.conf")

    local argv = as_user(user, { _M.PG_BIN .. "/postgres", "-D", srv.data, "-p", tostring(srv.port),
        "-k", srv.socket_dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
        "-c", "password_encryption=scram-sha-256", "-c", "max_connections=100" })
    local ok, serr = start(srv, argv, function(s)
        local rc, o = s:psql("SELECT 1", true)
        return rc ~= nil, o
    end, opts.start_timeout or 30, env)
    if not ok then
        local o = srv:output()
        srv:stop(1)
        return nil, serr .. "\n" .. o
    end
    local r, cerr = srv:psql(format("CREATE ROLE %s LOGIN PASSWORD '%s'", srv.user, srv.password),
        true)
    if r then
        -- CREATE DATABASE cannot share psql -c with another statement (one transaction).
        r, cerr = srv:psql(format("CREATE DATABASE %s OWNER %s", srv.database, srv.user), true)
    end
    if not r then
        srv:stop()
        return nil, "cannot create the user: " .. tostring(cerr)
    end
    return srv
end

-- Runs `sql` with psql: as the created user over TCP with its password (scram-sha-256), or
-- as the superuser over the unix socket. Returns psql's unaligned output, or nil, output.
function PgServer:psql(sql, as_superuser)
    local argv
    local env = { LC_ALL = "C" }
    if as_superuser then
        argv = { _M.PG_BIN .. "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                 "-h", self.socket_dir, "-p", tostring(self.port), "-U", "postgres",
                 "-d", "postgres", "-c", sql }
    else
        argv = { _M.PG_BIN .. "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                 "-h", self.host, "-p", tostring(self.port), "-U", self.user,
                 "-d", self.database, "-c", sql }
        env.PGPASSWORD = self.password
    end
    env.PGCONNECT_TIMEOUT = "2"
    local st, out = run(argv, 15, env)
    out = (out or ""):gsub("\n$", "")
    if st ~= 0 then
        return nil, out
    end
    return out
end

-- dnsmasq --------------------------------------------------------------------------------------

local DnsServer = setmetatable({}, { __index = Server })
DnsServer.__index = DnsServer

-- The names every dnsmasq of these specs serves (zone moonfcgi.test):
_M.DNS = {
    zone = "moonfcgi.test",
    a = "www.moonfcgi.test", -- A 127.0.0.1 and AAAA ::1
    v4 = "v4.moonfcgi.test", -- A 127.0.0.2 only
    v6 = "v6.moonfcgi.test", -- AAAA ::1 only
    cname = "alias.moonfcgi.test", -- CNAME www.moonfcgi.test
    srv = "_redis._tcp.moonfcgi.test", -- SRV 10 20 6379 www.moonfcgi.test
    txt = "txt.moonfcgi.test", -- TXT "moonfcgi test record"
    short = "short.moonfcgi.test", -- A 127.0.0.3 with a TTL of 1 s
    many = "many.moonfcgi.test", -- 60 A records 127.0.1.1..60: too big for UDP (TCP fallback)
    missing = "missing.moonfcgi.test", -- NXDOMAIN (3: Host not found)
    slow = "slow.example", -- forwarded to a server that never answers: times out
}
_M.DNS.ttl = 600 -- of every record but `short`
_M.DNS.txt_value = "moonfcgi test record"

-- Starts dnsmasq on 127.0.0.1:PORT (UDP and TCP) with no resolv.conf and no /etc/hosts:
-- only the names of upstreams.DNS (and opts.hosts: { { "name", "addr" }, ... }) answer,
-- everything under moonfcgi.test that is not listed is NXDOMAIN, and every name under
-- slow.example (and any other name) goes to a UDP socket this process holds and never reads,
-- so it times out. Queries are logged: :queries(name) counts those dnsmasq received.
-- The server: .host, .port, .addr ("127.0.0.1:PORT"), .names (= upstreams.DNS).
function _M.dnsmasq(opts)
    opts = opts or {}
    local srv, err = new_server("dnsmasq", opts)
    if not srv then
        return nil, err
    end
    setmetatable(srv, DnsServer)
    srv.names = _M.DNS
    srv.host, srv.port = "127.0.0.1", free_port_both()
    srv.addr = srv.host .. ":" .. srv.port
    -- The black hole: a bound UDP socket nobody reads; closed by :stop().
    local bh, bh_port = bound("127.0.0.1", 0, SOCK_DGRAM)
    srv.blackhole_fd, srv.blackhole_port = bh, bh_port
    srv.on_stop = function(s)
        if s.blackhole_fd then
            C.mf_up_close(s.blackhole_fd)
            s.blackhole_fd = nil
        end
    end
    local D = _M.DNS
    local hosts = {
        "127.0.0.1 " .. D.a,
        "::1 " .. D.a,
        "127.0.0.2 " .. D.v4,
        "::1 " .. D.v6,
    }
    for i = 1, 60 do
        hosts[#hosts + 1] = "127.0.1." .. i .. " " .. D.many
    end
    for _, h in ipairs(opts.hosts or {}) do
        hosts[#hosts + 1] = h[2] .. " " .. h[1]
    end
    write(srv.dir .. "/hosts", concat(hosts, "\n") .. "\n")
    local conf = {
        "port=" .. srv.port,
        "listen-address=127.0.0.1",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "pid-file=",
        "log-queries",
        "log-facility=-",
        "cache-size=0", -- every query reaches the log: the specs count them
        "addn-hosts=" .. srv.dir .. "/hosts",
        "local-ttl=" .. D.ttl,
        "local=/" .. D.zone .. "/",
        "host-record=" .. D.short .. ",127.0.0.3,1",
        "cname=" .. D.cname .. "," .. D.a,
        "srv-host=" .. D.srv .. "," .. D.a .. ",6379,10,20",
        format("txt-record=%s,\"%s\"", D.txt, D.txt_value),
        "server=127.0.0.1#" .. bh_port,
    }
    for _, line in ipairs(opts.config or {}) do
        conf[#conf + 1] = line
    end
    srv.conf_path = srv.dir .. "/dnsmasq.conf"
    write(srv.conf_path, concat(conf, "\n") .. "\n")
    return start_or_clean(srv, { "dnsmasq", "--keep-in-foreground", "--conf-file=" .. srv.conf_path },
        function(s)
            -- dnsmasq binds UDP and TCP before it accepts: a TCP connect means both are up.
            return connectable(s.addr)
        end, opts.start_timeout)
end

-- How many queries of `qtype` ("A", "AAAA", ...; nil: any) for `name` dnsmasq received.
function DnsServer:queries(name, qtype)
    local n = 0
    local pat = "query%[" .. (qtype or "[%w]+") .. "%] " .. name:gsub("%p", "%%%0") .. " from"
    for _ in self:output():gmatch(pat) do
        n = n + 1
    end
    return n
end

-- A small DNS client (for checking the server, not the code under test) -------------------

local QTYPES = { A = 1, NS = 2, CNAME = 5, SOA = 6, PTR = 12, TXT = 16, AAAA = 28, SRV = 33 }
_M.QTYPES = QTYPES

local function encode_name(name)
    local out = {}
    for label in name:gmatch("[^.]+") do
        out[#out + 1] = string.char(#label) .. label
    end
    return concat(out) .. "\0"
end

-- Reads a (possibly compressed) name at 1-based offset i; returns name, next offset.
local function decode_name(msg, i)
    local labels, next_i, hops = {}, nil, 0
    while true do
        local len = msg:byte(i)
        if not len then
            return nil, i
        end
        if len == 0 then
            i = i + 1
            break
        elseif len >= 192 then
            local ptr = (len - 192) * 256 + msg:byte(i + 1)
            next_i = next_i or i + 2
            i = ptr + 1
            hops = hops + 1
            if hops > 20 then
                return nil, i
            end
        else
            labels[#labels + 1] = msg:sub(i + 1, i + len)
            i = i + 1 + len
        end
    end
    return concat(labels, "."), next_i or i
end

local function u16(msg, i)
    return msg:byte(i) * 256 + msg:byte(i + 1)
end

local function parse_answer(msg)
    if #msg < 12 then
        return nil, "short answer"
    end
    local flags = u16(msg, 3)
    local res = {
        id = u16(msg, 1),
        rcode = bit.band(flags, 15),
        tc = bit.band(flags, 0x200) ~= 0,
        answers = {},
    }
    local qd, an = u16(msg, 5), u16(msg, 7)
    local i = 13
    for _ = 1, qd do
        local _, ni = decode_name(msg, i)
        i = ni + 4
    end
    for _ = 1, an do
        local name, ni = decode_name(msg, i)
        if not name then
            break
        end
        i = ni
        local rtype, ttl = u16(msg, i), u16(msg, i + 4) * 65536 + u16(msg, i + 6)
        local rdlen = u16(msg, i + 8)
        local rd = i + 10
        local rr = { name = name, type = rtype, ttl = ttl }
        if rtype == QTYPES.A then
            rr.address = format("%d.%d.%d.%d", msg:byte(rd, rd + 3))
        elseif rtype == QTYPES.AAAA then
            local parts = {}
            for k = 0, 7 do
                parts[#parts + 1] = format("%x", u16(msg, rd + 2 * k))
            end
            rr.address = concat(parts, ":")
        elseif rtype == QTYPES.CNAME then
            rr.cname = decode_name(msg, rd)
        elseif rtype == QTYPES.SRV then
            rr.priority, rr.weight, rr.port = u16(msg, rd), u16(msg, rd + 2), u16(msg, rd + 4)
            rr.target = decode_name(msg, rd + 6)
        elseif rtype == QTYPES.TXT then
            rr.txt = msg:sub(rd + 1, rd + msg:byte(rd))
        end
        res.answers[#res.answers + 1] = rr
        i = rd + rdlen
    end
    return res
end

-- Asks host:port for `name`'s `qtype` ("A", "AAAA", "SRV", ...) over UDP, or over TCP with
-- opts.tcp. Returns { rcode, tc, answers = { { name, type, ttl, address | cname | txt |
-- priority, weight, port, target } } }, or nil, "timeout" after opts.timeout (default 2 s).
function _M.dns_query(host, port, name, qtype, opts)
    opts = opts or {}
    local id = math.random(0, 65535)
    local msg = string.char(bit.rshift(id, 8), bit.band(id, 255), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0)
        .. encode_name(name) .. string.char(0, QTYPES[qtype] or qtype, 0, 1)
    if opts.tcp then
        local len = #msg
        local out, err, partial = _M.tcp_exchange(host, port,
            string.char(bit.rshift(len, 8), bit.band(len, 255)) .. msg, nil, opts.timeout or 2)
        out = out or partial
        if not out or #out < 2 then
            return nil, err
        end
        return parse_answer(out:sub(3, 2 + u16(out, 1)))
    end
    local sa, len = sockaddr(host, port)
    local fd = C.mf_up_socket(AF_INET, SOCK_DGRAM, 0)
    C.mf_up_connect(fd, sa, len)
    C.mf_up_send(fd, msg, #msg, 0)
    local pfd = ffi.new("struct mf_up_pollfd[1]")
    pfd[0].fd, pfd[0].events = fd, POLLIN
    local buf = ffi.new("char[65536]")
    local res, err = nil, "timeout"
    if C.mf_up_poll(pfd, 1, (opts.timeout or 2) * 1000) > 0 then
        local n = tonumber(C.mf_up_recv(fd, buf, 65536, 0))
        if n > 0 then
            res, err = parse_answer(ffi.string(buf, n))
        else
            err = "recv failed"
        end
    end
    C.mf_up_close(fd)
    return res, err
end

-- HTTPS: nginx with certificates made by openssl ----------------------------------------------

local function openssl(dir, args)
    local rc, out = sh("cd " .. q(dir) .. " && openssl " .. args)
    if rc ~= 0 then
        return nil, "openssl " .. args .. ":\n" .. out
    end
    return true
end

local KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

-- A CA (key, self-signed certificate, openssl ca database) in dir/NAME.*.
local function make_ca(dir, name, cn)
    local ok, err = openssl(dir, format("req -x509 %s -keyout %s.key -out %s.crt -days 30 "
        .. "-subj %s -addext 'basicConstraints=critical,CA:TRUE' "
        .. "-addext 'keyUsage=critical,keyCertSign,cRLSign'", KEY, name, name, q("/CN=" .. cn)))
    if not ok then
        return nil, err
    end
    write(dir .. "/" .. name .. ".index", "")
    write(dir .. "/" .. name .. ".serial", "01\n")
    write(dir .. "/" .. name .. ".cnf", concat({
        "[ca]", "default_ca = d", "[d]",
        "database = " .. dir .. "/" .. name .. ".index",
        "new_certs_dir = " .. dir,
        "serial = " .. dir .. "/" .. name .. ".serial",
        "default_md = sha256",
        "unique_subject = no",
        "policy = p", "[p]", "commonName = supplied",
    }, "\n") .. "\n")
    return true
end

-- A server certificate dir/NAME.crt (+ .key) for `cn` with subjectAltName `san`, signed by
-- the CA `ca`; `dates` is "-days 30" or "-startdate ... -enddate ...".
local function make_cert(dir, name, ca, cn, san, dates)
    local ok, err = openssl(dir, format("req %s -keyout %s.key -out %s.csr -subj %s", KEY, name,
        name, q("/CN=" .. cn)))
    if not ok then
        return nil, err
    end
    write(dir .. "/" .. name .. ".ext", "subjectAltName = " .. san .. "\n"
        .. "basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n")
    return openssl(dir, format("ca -batch -notext -config %s.cnf -cert %s.crt -keyfile %s.key "
        .. "%s -in %s.csr -out %s.crt -extfile %s.ext", ca, ca, ca, dates, name, name, name))
end

-- Starts nginx serving HTTP and HTTPS on 127.0.0.1 (and [::1] when it can be bound), one port
-- per certificate:
--   .ports.good        a certificate for localhost (SAN DNS:localhost, IP:127.0.0.1, IP:::1)
--                      signed by the test CA (.ca_file)
--   .ports.wrong_host  signed by the test CA for wrong.example only
--   .ports.unknown_ca  for localhost, signed by another CA (.other_ca_file) not in .ca_file
--   .ports.expired     for localhost, signed by the test CA, valid only in January 2020
--   .ports.http        plain HTTP
-- Every location answers 200 with the text "<kind>\n" ("good", "wrong_host", ...); /big
-- answers 1 MiB. TLS session cache and tickets are on (session reuse). The server: .host,
-- .ports, .ca_file, .other_ca_file, .certs[kind] (the certificate file), :error_log().
function _M.https(opts)
    opts = opts or {}
    local srv, err = new_server("https", opts)
    if not srv then
        return nil, err
    end
    local nginx = require "nginx"
    local bin = nginx.find()
    if not bin then
        srv:stop()
        return nil, "nginx not installed"
    end
    local dir = srv.dir
    local function fail(e)
        srv:stop()
        return nil, e
    end
    local ok
    ok, err = make_ca(dir, "ca", "moonfcgi test CA")
    if not ok then
        return fail(err)
    end
    ok, err = make_ca(dir, "other-ca", "moonfcgi unknown CA")
    if not ok then
        return fail(err)
    end
    local good_san = "DNS:localhost,IP:127.0.0.1,IP:::1"
    local certs = {
        { "good", "ca", "localhost", good_san, "-days 30" },
        { "wrong_host", "ca", "wrong.example", "DNS:wrong.example", "-days 30" },
        { "unknown_ca", "other-ca", "localhost", good_san, "-days 30" },
        { "expired", "ca", "localhost", good_san,
          "-startdate 20200101000000Z -enddate 20200102000000Z" },
    }
    srv.host = "127.0.0.1"
    srv.ca_file = dir .. "/ca.crt"
    srv.other_ca_file = dir .. "/other-ca.crt"
    srv.certs, srv.ports, srv.urls = {}, {}, {}
    for _, c in ipairs(certs) do
        ok, err = make_cert(dir, c[1], c[2], c[3], c[4], c[5])
        if not ok then
            return fail(err)
        end
        srv.certs[c[1]] = dir .. "/" .. c[1] .. ".crt"
    end
    os_execute("chmod 644 " .. q(dir) .. "/*.key")
    local v6 = opts.ipv6 ~= false and _M.have_ipv6()
    srv.ipv6 = v6
    local L = {}
    local function line(s, ...)
        L[#L + 1] = format(s, ...)
    end
    line("daemon off;")
    line("master_process on;")
    line("worker_processes 1;")
    if servers.is_root() then
        line("user %s;", servers.run_user())
    end
    line("pid %s/nginx.pid;", dir)
    line("error_log %s/error.log info;", dir)
    line("events { worker_connections 256; }")
    line("http {")
    line("    access_log %s/access.log;", dir)
    for _, t in ipairs({ "client_body", "fastcgi", "proxy", "uwsgi", "scgi" }) do
        line("    %s_temp_path %s/temp/%s;", t, dir, t)
    end
    line("    default_type text/plain;")
    line("    ssl_session_cache shared:moonfcgi:1m;")
    line("    ssl_session_tickets on;")
    local kinds = { "http", "good", "wrong_host", "unknown_ca", "expired" }
    for _, kind in ipairs(kinds) do
        local port = process.free_port()
        srv.ports[kind] = port
        local tls = kind ~= "http" and " ssl" or ""
        srv.urls[kind] = (tls ~= "" and "https" or "http") .. "://127.0.0.1:" .. port
        line("    server {")
        line("        listen 127.0.0.1:%d%s;", port, tls)
        if v6 then
            line("        listen [::1]:%d%s;", port, tls)
        end
        if tls ~= "" then
            line("        ssl_certificate %s/%s.crt;", dir, kind)
            line("        ssl_certificate_key %s/%s.key;", dir, kind)
        end
        line("        location /big { return 200 '%s'; }", ("x"):rep(1023) .. "\n")
        line("        location / { return 200 '%s\\n'; }", kind)
        line("    }")
    end
    line("}")
    os_execute("mkdir -p " .. q(dir .. "/temp"))
    srv.conf_path = dir .. "/nginx.conf"
    write(srv.conf_path, concat(L, "\n") .. "\n")
    srv.error_log = function(s)
        return (servers.read_file(s.dir .. "/error.log") or "") .. s:output()
    end
    return start_or_clean(srv, { bin, "-p", dir .. "/", "-c", srv.conf_path, "-e",
        dir .. "/error.log" }, function(s)
        for _, kind in ipairs(kinds) do
            local cok, cerr = connectable("127.0.0.1:" .. s.ports[kind])
            if not cok then
                return cok, cerr
            end
        end
        return true
    end, opts.start_timeout)
end

-- Debian's OpenResty Lua libraries (fetched, unpacked, never installed) --------------------

-- Debian names them nginx.redis, nginx.memcached, nginx.dns.resolver, nginx.websocket.client,
-- nginx.string (and nginx.sha1, ...), nginx.kafka.producer, nginx.redis.connector, and
-- resty.lrucache: the packages' modules by the name OpenResty's README gives them.
_M.RESTY_PACKAGES = {
    "lua-nginx-redis", "lua-nginx-memcached", "lua-nginx-dns", "lua-nginx-websocket",
    "lua-nginx-string", "lua-nginx-kafka", "lua-nginx-redis-connector", "lua-resty-lrucache",
}

local function here()
    local src = debug.getinfo(1, "S").source:sub(2)
    return src:match("^(.*)/[^/]*$") or "."
end

-- The cache folder tools/fetch-resty.sh fills: $MOONFCGI_DEB_CACHE, else
-- ${XDG_CACHE_HOME:-$HOME/.cache}/moonfcgi/debs.
function _M.deb_cache()
    local c = os_getenv("MOONFCGI_DEB_CACHE")
    if c and c ~= "" then
        return c
    end
    local base = os_getenv("XDG_CACHE_HOME")
    if not base or base == "" then
        base = (os_getenv("HOME") or "/tmp") .. "/.cache"
    end
    return base .. "/moonfcgi/debs"
end

local fetched

-- Makes sure the packages are downloaded and unpacked (runs tools/fetch-resty.sh, which needs
-- the network only the first time) and returns { cache, root, lua_dir, path }: `path` goes
-- in front of package.path. nil, err when they cannot be fetched.
function _M.fetch_debs()
    if fetched then
        return fetched
    end
    local cache = _M.deb_cache()
    local lua_dir = cache .. "/root/usr/share/lua/5.1"
    local complete = true
    for _, p in ipairs(_M.RESTY_PACKAGES) do
        if sh("ls " .. q(cache) .. "/" .. p .. "_*.deb") ~= 0 then
            complete = false
        end
    end
    if not complete or not exists(lua_dir .. "/nginx/redis.lua") then
        local rc, out = sh(q(here() .. "/../../tools/fetch-resty.sh") .. " " .. q(cache))
        if rc ~= 0 then
            return nil, "tools/fetch-resty.sh failed:\n" .. out
        end
    end
    fetched = {
        cache = cache,
        root = cache .. "/root",
        lua_dir = lua_dir,
        path = lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;",
    }
    return fetched
end

local manifest

-- { ["usr/share/lua/5.1/nginx/redis.lua"] = { md5 =, deb =, package = } } from each .deb's
-- own md5sums control file.
local function deb_manifest()
    if manifest then
        return manifest
    end
    local f = assert(_M.fetch_debs())
    manifest = {}
    local p = io_popen("ls " .. q(f.cache) .. "/*.deb")
    for deb in p:read("*a"):gmatch("[^\n]+") do
        local pkg = deb:match("([^/]+)_[^_/]+_[^_/]+%.deb$")
        local _, sums = sh("dpkg-deb -I " .. q(deb) .. " md5sums")
        for md5, path in sums:gmatch("(%x+)  ([^\n]+)") do
            manifest[path] = { md5 = md5, deb = deb, package = pkg }
        end
    end
    p:close()
    return manifest
end

-- Checks that `path` (a file under the unpacked tree) is the package's file byte for byte:
-- its md5 is the one the package's md5sums lists, and it equals the file dpkg-deb extracts
-- from the .deb now. Returns the package name, or nil, err.
function _M.deb_file_check(path)
    local f = assert(_M.fetch_debs())
    local prefix = f.root .. "/"
    if path:sub(1, #prefix) ~= prefix then
        return nil, path .. " is not under " .. prefix
    end
    local rel = path:sub(#prefix + 1)
    local entry = deb_manifest()[rel]
    if not entry then
        return nil, rel .. " is in no package's md5sums"
    end
    local _, sum = sh("md5sum " .. q(path))
    if sum:match("^(%x+)") ~= entry.md5 then
        return nil, format("%s: md5 %s, the package says %s", rel, tostring(sum:match("^(%x+)")),
            entry.md5)
    end
    local rc, out = sh(format("dpkg-deb --fsys-tarfile %s | tar -xO %s | cmp - %s", q(entry.deb),
        q("./" .. rel), q(path)))
    if rc ~= 0 then
        return nil, rel .. " differs from the .deb's: " .. out
    end
    return entry.package
end

-- Where `modname` loads from on package.path, checked with deb_file_check: returns the path
-- and the package name, or nil, err.
function _M.check_module(modname)
    local path, err = package.searchpath(modname, package.path)
    if not path then
        return nil, err
    end
    local pkg, cerr = _M.deb_file_check(path)
    if not pkg then
        return nil, cerr
    end
    return path, pkg
end

return _M
