-- Starting and stopping processes from specs: the moonfcgi binary under test and real web
-- servers. Processes are spawned directly (posix_spawn), so they are our children: a spec
-- can wait for them, read their exit status, and ends only the pids it started.
local ffi = require "ffi"
local client = require "moonfcgi.client"

pcall(ffi.cdef, [[
typedef int mf_spec_pid_t;
int posix_spawnp(mf_spec_pid_t *pid, const char *file, const void *file_actions,
                 const void *attrp, char *const argv[], char *const envp[]);
int posix_spawn_file_actions_init(void *fa);
int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag,
                                     unsigned mode);
int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd);
int posix_spawn_file_actions_destroy(void *fa);
int waitpid(mf_spec_pid_t pid, int *status, int options);
int kill(mf_spec_pid_t pid, int sig);
extern char **environ;
]])

local C = ffi.C
local _M = {}
local Proc = {}
Proc.__index = Proc

local O_WRONLY, O_CREAT, O_TRUNC, O_RDONLY = 1, 64, 512, 0
local WNOHANG = 1
_M.SIGTERM, _M.SIGKILL, _M.SIGINT, _M.SIGHUP, _M.SIGSTOP, _M.SIGCONT = 15, 9, 2, 1, 19, 18

-- The binary under test: $MOONFCGI_BIN (set by spec/run-all.sh), else build/moonfcgi.
_M.bin = os.getenv("MOONFCGI_BIN") or "build/moonfcgi"

local function environment(extra)
    local env, seen = {}, {}
    for k, v in pairs(extra or {}) do
        if v ~= false then
            env[#env + 1] = k .. "=" .. v
        end
        seen[k] = true
    end
    local i = 0
    while C.environ[i] ~= nil do
        local s = ffi.string(C.environ[i])
        local k = s:match("^([^=]*)=")
        if k and not seen[k] then
            env[#env + 1] = s
        end
        i = i + 1
    end
    return env
end

local function cstrings(list)
    local arr = ffi.new("char *[?]", #list + 1)
    local keep = {}
    for i, s in ipairs(list) do
        keep[i] = ffi.new("char[?]", #s + 1, s)
        arr[i - 1] = keep[i]
    end
    arr[#list] = nil
    return arr, keep
end

-- Spawns argv (a list) with stdout and stderr going to opts.log (default: a temp file) and
-- stdin from /dev/null, or from opts.stdin_fd. opts.env: extra variables (false unsets).
function _M.spawn(argv, opts)
    opts = opts or {}
    local env = { LD_PRELOAD = false } -- the sanitizer runtimes preloaded into busted only
    for k, v in pairs(opts.env or {}) do
        env[k] = v
    end
    local log = opts.log or os.tmpname()
    local fa = ffi.new("char[256]") -- posix_spawn_file_actions_t is 80 bytes in glibc
    C.posix_spawn_file_actions_init(fa)
    if opts.stdin_fd then
        C.posix_spawn_file_actions_adddup2(fa, opts.stdin_fd, 0)
    else
        C.posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0)
    end
    C.posix_spawn_file_actions_addopen(fa, 1, log, O_WRONLY + O_CREAT + O_TRUNC, 420)
    C.posix_spawn_file_actions_adddup2(fa, 1, 2)
    local cargv, k1 = cstrings(argv)
    local cenv, k2 = cstrings(environment(env))
    local pid = ffi.new("mf_spec_pid_t[1]")
    local rc = C.posix_spawnp(pid, argv[1], fa, nil, cargv, cenv)
    C.posix_spawn_file_actions_destroy(fa)
    local _ = { k1, k2 }
    if rc ~= 0 then
        return nil, "cannot start " .. argv[1] .. ": error " .. rc
    end
    return setmetatable({ pid = pid[0], log = log, argv = argv }, Proc)
end

function Proc:signal(sig)
    if self.status == nil then
        C.kill(self.pid, sig)
    end
end

-- Waits up to `timeout` seconds for the process to exit; returns its exit status (128 + n
-- for a signal), or nil if it still runs.
function Proc:wait(timeout)
    if self.status then
        return self.status
    end
    local st = ffi.new("int[1]")
    local deadline = client.now() + (timeout or 10)
    repeat
        local rc = C.waitpid(self.pid, st, WNOHANG)
        if rc == self.pid then
            local s = st[0]
            if bit.band(s, 0x7f) == 0 then
                self.status = bit.rshift(bit.band(s, 0xff00), 8)
            else
                self.status = 128 + bit.band(s, 0x7f)
            end
            return self.status
        elseif rc < 0 then
            self.status = -1
            return -1
        end
        C.poll(nil, 0, 10)
    until client.now() >= deadline
    return nil
end

function Proc:running()
    return self:wait(0) == nil
end

-- SIGTERM, then SIGKILL if it has not exited within `grace` seconds; returns the status.
function Proc:stop(grace)
    if self.status then
        return self.status
    end
    self:signal(_M.SIGTERM)
    local st = self:wait(grace or 5)
    if st == nil then
        self:signal(_M.SIGKILL)
        st = self:wait(5)
    end
    return st
end

function Proc:output()
    local f = io.open(self.log, "rb")
    if not f then
        return ""
    end
    local s = f:read("*a")
    f:close()
    return s
end

function Proc:cleanup()
    self:stop()
    os.remove(self.log)
end

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

-- Waits until addr accepts connections (bounded); returns true or nil, err.
function _M.wait_connectable(addr, timeout, proc)
    local deadline = client.now() + (timeout or 10)
    local err
    repeat
        local c
        c, err = client.connect(addr, { timeout = 1 })
        if c then
            c:close()
            return true
        end
        if proc and not proc:running() then
            return nil, "process exited with status " .. tostring(proc.status) .. ":\n"
                .. proc:output()
        end
        C.poll(nil, 0, 20)
    until client.now() >= deadline
    return nil, err
end

pcall(ffi.cdef, [[
struct mf_spec_proc_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
int socket(int domain, int type, int protocol);
int bind(int fd, const void *addr, unsigned len);
int getsockname(int fd, void *addr, unsigned *len);
int close(int fd);
]])

-- A loopback TCP port that is free now: the kernel picks it for a socket we then close.
function _M.free_port()
    local fd = C.socket(2, 1, 0)
    assert(fd >= 0, "socket failed")
    local sa = ffi.new("struct mf_spec_proc_sockaddr_in")
    sa.family = 2
    sa.addr = 0x0100007f -- 127.0.0.1 in network order on little-endian x86_64
    local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
    assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind failed")
    assert(C.getsockname(fd, sa, len) == 0, "getsockname failed")
    C.close(fd)
    return bit.rshift(bit.bswap(sa.port), 16)
end

-- Starts moonfcgi serving app; opts.args: extra arguments; opts.listen: the address
-- (default: a free loopback port); opts.http: the address is an --http one instead of
-- --listen. Returns the process, with .addr set, once it accepts.
function _M.moonfcgi(app, opts)
    opts = opts or {}
    local addr = opts.listen or ("127.0.0.1:" .. _M.free_port())
    local argv = { _M.bin, opts.http and "--http" or "--listen", addr }
    for _, a in ipairs(opts.args or {}) do
        argv[#argv + 1] = a
    end
    argv[#argv + 1] = app
    local env = { ASAN_OPTIONS = os.getenv("MOONFCGI_CHILD_ASAN_OPTIONS") or false,
                  LD_PRELOAD = false }
    for k, v in pairs(opts.env or {}) do
        env[k] = v
    end
    local p, err = _M.spawn(argv, { env = env })
    if not p then
        return nil, err
    end
    p.addr = addr
    local ok, cerr = _M.wait_connectable(addr, opts.start_timeout or 10, p)
    if not ok then
        p:cleanup()
        return nil, "moonfcgi did not start: " .. tostring(cerr)
    end
    return p
end

return _M
