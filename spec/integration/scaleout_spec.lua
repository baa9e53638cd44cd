-- Past one machine: several moonfcgi hosts behind one nginx upstream, nginx's own load
-- balancing and retries in front (docs/scaling.md). Three hosts (one worker each) on their own
-- loopback ports stand for three machines; nginx runs the "scale-out" recipe of
-- spec/support/nginx.lua, the very configuration docs/scaling.md shows, on these addresses.
-- Load is real: background curl loops drive idempotent GETs through nginx while a host is
-- stopped, killed and started again, and every answer names the host that gave it.
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local needs = require "needs"
local process = require "process"
local nginx = require "nginx"
local http = require "http_client"
local client = require "moonfcgi.client"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
pcall(ffi.cdef, [[
struct mf_scale_timeval { long tv_sec; long tv_usec; };
int mf_scale_gettimeofday(struct mf_scale_timeval *tv, void *tz) __asm__("gettimeofday");
int mf_scale_kill(int pid, int sig) __asm__("kill");
]])

local APP = "spec/integration/apps/scale_whoami.lua"
local q = http.quote

local function sleep(seconds)
    ffi.C.poll(nil, 0, seconds * 1000)
end

-- Wall-clock seconds, the clock of nginx's $msec: the access log's times compare with it.
local function wall()
    local tv = ffi.new("struct mf_scale_timeval")
    ffi.C.mf_scale_gettimeofday(tv, nil)
    return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

-- Where the hosts note each /slow request they begin (the app's $SCALE_STARTED).
local started_log

local function start_host(name, listen)
    return assert(process.moonfcgi(APP, {
        listen = listen,
        args = { "--workers", "1" },
        env = { INSTANCE = name, SCALE_STARTED = started_log },
    }))
end

-- The URIs of the /slow requests host `who` (INSTANCE-PID) has begun whose URI starts with
-- `prefix`.
local function begun(who, prefix)
    local uris = {}
    for w, uri in (http.read_file(started_log) or ""):gmatch("([^\n ]+) ([^\n]+)") do
        if w == who and uri:sub(1, #prefix) == prefix then
            uris[uri] = true
        end
    end
    return uris
end

-- Waits (up to 3 s) until host `who` has begun a request under each of the prefixes: bursts
-- are in flight for a second from then on.
local function wait_in_flight(who, ...)
    local prefixes = { ... }
    local deadline = client.now() + 3
    repeat
        local all = true
        for _, prefix in ipairs(prefixes) do
            all = all and next(begun(who, prefix)) ~= nil
        end
        if all then
            return true
        end
        sleep(0.01)
    until client.now() >= deadline
    return false
end

-- The pids of p's children (its workers), from /proc.
local function children(p)
    local f = io.open(("/proc/%d/task/%d/children"):format(p.pid, p.pid), "rb")
    local pids = {}
    if f then
        for pid in f:read("*a"):gmatch("%d+") do
            pids[#pids + 1] = tonumber(pid)
        end
        f:close()
    end
    return pids
end

-- The whole host dies at once, as when its machine goes away: the master is frozen first (so
-- that it cannot replace its workers), the workers are killed, then the master. Killing the
-- master alone would not do: its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG) and
-- stop gracefully.
local function kill_host(p)
    p:signal(process.SIGSTOP)
    local workers = children(p)
    for _, pid in ipairs(workers) do
        ffi.C.mf_scale_kill(pid, process.SIGKILL)
    end
    p:signal(process.SIGKILL)
    return p:wait(5), #workers
end

-- Idempotent GETs through nginx, from `n` shell loops each running curl over 10 URLs (two of
-- them /slow, so that requests are in flight on a host whenever something happens to it) until
-- stop() is called. Bounded: at most 300 runs of curl per loop, each request at most 5 s, the
-- loop killed after 60 s.
local Load = {}
Load.__index = Load

local load_count = 0

local function write_urls(path, urls)
    local lines = {}
    for _, u in ipairs(urls) do
        lines[#lines + 1] = ('url = "%s"\noutput = "/dev/null"'):format(u)
    end
    http.write_file(path, table.concat(lines, "\n") .. "\n")
end

-- One line per transfer: the HTTP status (000: no answer), the URL and the host that answered.
local WRITE_OUT = "%{http_code} %{url_effective} %header{x-instance}\\n"

local function start_load(base, n)
    load_count = load_count + 1
    local dir = http.scratch("load" .. load_count)
    os.execute("mkdir -p " .. q(dir))
    local urls = {}
    for i = 1, 10 do
        urls[i] = base .. (i % 5 == 0 and "/slow/" or "/fast/") .. i
    end
    write_urls(dir .. "/urls", urls)
    local script = table.concat({
        "n=0",
        'while [ ! -e "$STOP" ] && [ "$n" -lt 300 ]; do',
        '  curl -sS --max-time 5 -w "$WRITE_OUT" -K "$URLS"',
        "  n=$((n + 1))",
        "done",
    }, "\n")
    local self = setmetatable({ dir = dir, procs = {}, logs = {} }, Load)
    for i = 1, n do
        local log = dir .. "/gen" .. i .. ".log"
        self.logs[i] = log
        self.procs[i] = assert(process.spawn(
            { "timeout", "-s", "KILL", "60", "sh", "-c", script },
            { log = log,
              env = { STOP = dir .. "/stop", URLS = dir .. "/urls", WRITE_OUT = WRITE_OUT } }))
    end
    return self
end

-- A burst of `n` slow requests (/slow/burstN GETs, or /slow/postN POSTs when `post`) sent
-- at once (curl --parallel-immediate), running in the background: each is in flight on its
-- host for 1 s, time enough to do something to that host meanwhile.
local function start_burst(base, n, post)
    load_count = load_count + 1
    local dir = http.scratch("burst" .. load_count)
    os.execute("mkdir -p " .. q(dir))
    local urls = {}
    for i = 1, n do
        urls[i] = base .. (post and "/slow/post" or "/slow/burst") .. i .. "?s=1"
    end
    write_urls(dir .. "/urls", urls)
    local self = setmetatable({ dir = dir, procs = {}, logs = { dir .. "/burst.log" } }, Load)
    local argv = { "timeout", "-s", "KILL", "30", "curl", "-sS", "--no-progress-meter",
                   "--max-time", "10", "-Z", "--parallel-immediate", "--parallel-max", tostring(n),
                   "-w", WRITE_OUT, "-K", dir .. "/urls" }
    if post then
        argv[#argv + 1] = "--data-binary"
        argv[#argv + 1] = "order=1"
    end
    self.procs[1] = assert(process.spawn(argv, { log = self.logs[1] }))
    return self
end

-- The answers so far: { total, ok, failed = { lines }, by = { [INSTANCE-PID] = n },
-- status = { [URI] = HTTP status } }.
function Load:results()
    local r = { total = 0, ok = 0, failed = {}, by = {}, status = {} }
    for _, log in ipairs(self.logs) do
        for line in (http.read_file(log) or ""):gmatch("[^\n]+") do
            local status, url, who = line:match("^(%d%d%d) (%S+) ?(%S*)$")
            if status then
                r.total = r.total + 1
                r.status[url:match("^https?://[^/]+(/.*)$") or url] = tonumber(status)
                if status == "200" and who ~= "" then
                    r.ok = r.ok + 1
                    r.by[who] = (r.by[who] or 0) + 1
                else
                    r.failed[#r.failed + 1] = line
                end
            else
                -- curl's own message for a transfer that failed (its status line says 000).
                r.failed[#r.failed + 1] = line
            end
        end
    end
    return r
end

-- Stops the loops after their current run of curl (half a second, when all is well) and
-- returns the results.
function Load:stop()
    http.write_file(self.dir .. "/stop", "")
    for _, p in ipairs(self.procs) do
        if p:wait(8) == nil then
            p:stop(1)
        end
    end
    return self:results()
end

-- Waits until fn(results) holds, or `timeout` seconds pass; returns whether it held.
function Load:wait_for(fn, timeout)
    local deadline = client.now() + timeout
    repeat
        if fn(self:results()) then
            return true
        end
        sleep(0.05)
    until client.now() >= deadline
    return false
end

local function describe_failures(r)
    return ("%d of %d requests failed:\n%s"):format(#r.failed, r.total,
        table.concat(r.failed, "\n", 1, math.min(#r.failed, 20)))
end

-- nginx's access log (the recipe with log_upstream): one entry per request.
local function access_entries(srv)
    local entries = {}
    for line in srv:access_log():gmatch("[^\n]+") do
        local msec, rtime, uri, status, ups, ustatus = line:match(
            '^([%d.]+) ([%d.]+) "%u+ (%S+) [^"]*" (%d+) upstream=(.-) upstream_status=(.*)$')
        if msec then
            local tried = {}
            for addr in ups:gmatch("[^,%s]+") do
                tried[#tried + 1] = addr
            end
            entries[#entries + 1] = {
                finished = tonumber(msec),
                started = tonumber(msec) - tonumber(rtime),
                uri = uri,
                status = tonumber(status),
                tried = tried,
                upstream_status = ustatus,
            }
        end
    end
    return entries
end

-- With SCALEOUT_VERBOSE set, each scenario prints what happened (counts, times).
local function note(line)
    if os.getenv("SCALEOUT_VERBOSE") then
        io.stdout:write("\n  ", line, "\n")
    end
end

local function count(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

describe("three moonfcgi hosts behind one nginx upstream", function()
    if not nginx.find() then
        pending(needs.missing("nginx not installed (apt-get install nginx); these specs need it"))
        return
    end
    if not http.have_curl() then
        pending(needs.missing("curl not installed (apt-get install curl); these specs need it"))
        return
    end

    local hosts, srv = {}, nil
    local LOADERS = 6

    local function who(name)
        return name .. "-" .. hosts[name].proc.pid
    end

    setup(function()
        started_log = http.scratch("started.log")
        http.write_file(started_log, "\n")
        for _, name in ipairs({ "a", "b", "c" }) do
            local p = start_host(name)
            hosts[name] = { proc = p, addr = p.addr }
        end
        srv = assert(nginx.start(nginx.recipe("scale-out", {
            upstream = { hosts.a.addr, hosts.b.addr, hosts.c.addr },
            listen = "127.0.0.1:" .. process.free_port(),
            log_upstream = true,
        })))
        -- Each host answers (round robin: one request each), before any load is started.
        local seen = {}
        for i = 1, 3 do
            local res = http.get(srv.url .. "/fast/check" .. i, { max_time = 5 })
            assert(res.status == 200, "no answer through nginx: " .. tostring(res.status) .. " "
                .. tostring(res.err) .. "\n" .. srv:error_log())
            seen[res.headers["x-instance"]] = true
        end
        for _, name in ipairs({ "a", "b", "c" }) do
            assert(seen[who(name)], "host " .. name .. " did not answer")
        end
    end)

    teardown(function()
        if srv then
            srv:stop()
        end
        -- The hosts still up stop gracefully (and, in the ASan suite, without a leak).
        local bad = {}
        for _, name in ipairs({ "a", "b", "c" }) do
            local p = hosts[name] and hosts[name].proc
            if p then
                local killed = p.status == 128 + process.SIGKILL
                local st = p:stop()
                if st ~= 0 and not killed then
                    bad[#bad + 1] = ("host %s exited with %s:\n%s"):format(name, tostring(st),
                        p:output())
                end
                p:cleanup()
            end
        end
        http.cleanup()
        assert(#bad == 0, table.concat(bad, "\n"))
    end)

    it("runs the configuration docs/scaling.md shows, on three loopback addresses", function()
        local want = nginx.site(nginx.recipe("scale-out", {
            upstream = { hosts.a.addr, hosts.b.addr, hosts.c.addr },
            listen = srv.listen,
        }))
        local indented = ("\n" .. want):gsub("\n([^\n])", "\n    %1"):sub(2)
        assert.is_truthy(srv.conf:find(indented, 1, true), "nginx.conf:\n" .. srv.conf)
        assert.matches("fastcgi_next_upstream error timeout invalid_header http_503;", srv.conf)
        assert.matches("max_fails=1 fail_timeout=5s;", srv.conf)
    end)

    it("spreads requests over all three hosts", function()
        local load = start_load(srv.url, LOADERS)
        local spread = load:wait_for(function(r)
            return r.total >= 150
        end, 10)
        local r = load:stop()
        assert.is_true(spread, "too few requests answered: " .. r.total)
        assert.equal(0, #r.failed, describe_failures(r))
        assert.equal(3, count(r.by))
        for _, name in ipairs({ "a", "b", "c" }) do
            local n = r.by[who(name)] or 0
            -- Round robin: a third each; well over a sixth each in any case.
            assert.is_true(n >= r.total / 6, ("host %s answered %d of %d"):format(name, n, r.total))
        end
    end)

    it("loses no request when a host stops gracefully (SIGTERM) under load, and finishes the "
        .. "requests it has in flight", function()
        local b = hosts.b
        local load = start_load(srv.url, LOADERS)
        assert.is_true(load:wait_for(function(r) return r.ok >= 12 end, 10), "no load flowing")
        local burst = start_burst(srv.url, 9)
        assert.is_true(wait_in_flight(who("b"), "/slow/burst"),
            "no request of the burst reached host b")
        local t_term = wall()
        b.proc:signal(process.SIGTERM)
        local status = b.proc:wait(10)
        local stopped_in = wall() - t_term
        -- The load goes on past the stop: 60 more answers, each a chance to fail.
        local seen = load:results().total
        load:wait_for(function(res) return res.total >= seen + 60 end, 20)
        local r = load:stop()
        local rb = burst:stop()

        assert.equal(0, status,
            "host b exited with " .. tostring(status) .. ":\n" .. b.proc:output())
        assert.equal(0, #r.failed, describe_failures(r))
        assert.equal(0, #rb.failed, describe_failures(rb))
        assert.equal(9, rb.total)
        -- The worker says how many requests it had in flight when the signal came...
        local in_flight = tonumber(b.proc:output():match(
            "stopping gracefully %((%d+) requests? in flight%)"))
        assert.is_number(in_flight, b.proc:output())
        assert.is_true(in_flight >= 1, "no request in flight on host b at SIGTERM")
        -- ...and nginx's log shows them answered by host b itself, not retried elsewhere.
        local spanning = 0
        for _, e in ipairs(access_entries(srv)) do
            if #e.tried == 1 and e.tried[1] == b.addr and e.status == 200
                and e.started < t_term and e.finished > t_term then
                spanning = spanning + 1
            end
        end
        assert.is_true(spanning >= 1, "no request spanning the SIGTERM was answered by host b")
        note(("graceful stop: %d requests (%d in the burst), 0 failed; %d in flight on b "
            .. "at SIGTERM, %d answered by b across it; b exited 0 in %.2f s"):format(
            r.total, rb.total, in_flight, spanning, stopped_in))
    end)

    it("loses no idempotent GET when a host is killed (SIGKILL) under load: nginx retries the "
        .. "ones in flight on it on another host, but not a POST", function()
        local c = hosts.c
        local load = start_load(srv.url, LOADERS)
        assert.is_true(load:wait_for(function(r) return r.ok >= 12 end, 10), "no load flowing")
        local burst = start_burst(srv.url, 9)
        local posts = start_burst(srv.url, 6, "post")
        assert.is_true(wait_in_flight(who("c"), "/slow/burst", "/slow/post"),
            "no GET or no POST of the bursts reached host c")
        local t_kill = wall()
        local status, nworkers = kill_host(c.proc)
        local posts_on_c = begun(who("c"), "/slow/post")
        -- The load goes on past the kill: 60 more answers, and the bursts all answered.
        local seen = load:results().total
        load:wait_for(function(res) return res.total >= seen + 60 end, 20)
        burst:wait_for(function(res) return res.total >= 9 end, 20)
        posts:wait_for(function(res) return res.total >= 6 end, 20)
        local r = load:stop()
        local rb = burst:stop()
        local rp = posts:stop()

        assert.equal(128 + process.SIGKILL, status)
        assert.equal(1, nworkers)
        assert.equal(0, #r.failed, describe_failures(r))
        assert.equal(0, #rb.failed, describe_failures(rb))
        -- GETs in flight on host c when it died: nginx tried c first, then another host, and
        -- the client got that one's answer.
        local retried = 0
        for _, e in ipairs(access_entries(srv)) do
            if #e.tried >= 2 and e.tried[1] == c.addr and not e.uri:match("^/slow/post")
                and e.started < t_kill and e.finished > t_kill then
                assert.equal(200, e.status)
                retried = retried + 1
            end
        end
        assert.is_true(retried >= 1, "no GET was in flight on host c when it was killed")
        -- A POST nginx had sent to c is not retried (fastcgi_next_upstream has no
        -- non_idempotent): the client gets 502. The other POSTs, on host a, succeed.
        assert.equal(6, rp.total)
        local lost = 0
        for i = 1, 6 do
            local uri = "/slow/post" .. i .. "?s=1"
            if posts_on_c[uri] then
                lost = lost + 1
                assert.equal(502, rp.status[uri], uri)
            else
                assert.equal(200, rp.status[uri], uri)
            end
        end
        assert.is_true(lost >= 1)
        note(("kill: %d GETs (%d in the burst), 0 failed; %d GETs were in flight on c and "
            .. "nginx retried them elsewhere; %d of 6 POSTs were in flight on c and got 502")
            :format(r.total + rb.total, rb.total, retried, lost))
    end)

    it("sends traffic to the stopped host again once it is back on its port", function()
        local b = hosts.b
        local old = who("b")
        local load = start_load(srv.url, LOADERS)
        assert.is_true(load:wait_for(function(r) return r.ok >= 12 end, 10), "no load flowing")
        local t_start = wall()
        b.proc:cleanup()
        b.proc = start_host("b", b.addr)
        local now = who("b")
        assert.are_not.equal(old, now)
        -- nginx left host b out after it refused connections; it tries it again once
        -- fail_timeout (5 s, counted in whole seconds: up to 6) has passed since it last
        -- failed, and then it is back in the rotation.
        local back = load:wait_for(function(r)
            return (r.by[now] or 0) > 0
        end, 10)
        local t_back = wall()
        -- Enough answers after that to see the share of each host (LOADERS were in flight).
        local seen = load:results().total
        load:wait_for(function(res) return res.total >= seen + 60 end, 20)
        local r = load:stop()

        assert.is_true(back, "host b took no request within 10 s of starting again")
        assert.equal(0, #r.failed, describe_failures(r))
        local after, by_b = 0, 0
        for _, e in ipairs(access_entries(srv)) do
            if e.started > t_back + 0.1 then
                after = after + 1
                if e.tried[#e.tried] == b.addr then
                    by_b = by_b + 1
                end
            end
        end
        -- Two live hosts (c stays down): about half each.
        assert.is_true(after >= 20, "too few requests after host b came back: " .. after)
        assert.is_true(by_b >= after / 4, ("host b answered %d of %d"):format(by_b, after))
        note(("restart: b took its first request %.1f s after it started again, then %d "
            .. "of %d"):format(t_back - t_start, by_b, after))
    end)
end)

describe("a rolling restart that does not wait for the restarted host", function()
    if not nginx.find() or not http.have_curl() then
        pending(needs.missing("nginx and curl are needed (apt-get install nginx curl)"))
        return
    end

    local a, b, srv

    setup(function()
        a = start_host("a")
        b = start_host("b")
        srv = assert(nginx.start(nginx.recipe("scale-out", {
            upstream = { a.addr, b.addr },
            listen = "127.0.0.1:" .. process.free_port(),
        })))
    end)

    teardown(function()
        if srv then
            srv:stop()
        end
        a:cleanup()
        b:cleanup()
        http.cleanup()
    end)

    local function get(path)
        local res = http.get(srv.url .. path, { max_time = 10 })
        return res.status, res.headers["x-instance"]
    end

    it("gets 502 from nginx when the next host stops while nginx still leaves the first out",
        function()
            assert.equal(200, (get("/1")))
            assert.equal(200, (get("/2")))
            assert.equal(0, a:stop())
            -- nginx finds host a refusing (on its turn in the round robin), retries on b and
            -- leaves a out for fail_timeout.
            local refused = "connect() failed (111: Connection refused) while connecting to "
                .. "upstream, client: 127.0.0.1, server: , request: \"GET /"
            local status, host
            for i = 3, 5 do
                status, host = get("/" .. i)
                assert.equal(200, status)
                assert.equal("b-" .. b.pid, host)
                if srv:error_log():find(refused, 1, true) then
                    break
                end
            end
            assert.is_truthy(srv:error_log():find(refused, 1, true), srv:error_log())
            a:cleanup()
            a = start_host("a", a.addr)
            -- a is up again, but nginx does not try it before fail_timeout has passed...
            status, host = get("/6")
            assert.equal(200, status)
            assert.equal("b-" .. b.pid, host)
            -- ...so with b stopping now, nginx has no host it will try.
            assert.equal(0, b:stop())
            for i = 7, 9 do
                assert.equal(502, (get("/" .. i)))
            end
            assert.matches("no live upstreams", srv:error_log())
        end)
end)
