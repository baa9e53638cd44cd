-- The scheduler of one worker: loads the app, takes the events of the C core
-- (mf_ffi_worker_poll) and runs each request's handler in its own coroutine. The C side never
-- calls Lua; everything that waits yields here, and the events say when to resume.
local ffi = require "ffi"
local core = require "moonfcgi.core"
local request = require "moonfcgi.request"
local shdict = require "moonfcgi.shdict"

local C = core.C
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_running = coroutine.running
local tostring, type, pairs, pcall, xpcall = tostring, type, pairs, pcall, xpcall
local math_floor = math.floor
local traceback = debug.traceback

local EV_NEW, EV_WAKE, EV_TIMEOUT = C.MF_EV_NEW, C.MF_EV_WAKE, C.MF_EV_TIMEOUT
local EV_TIMER, EV_RELOAD, EV_KILL = C.MF_EV_TIMER, C.MF_EV_RELOAD, C.MF_EV_KILL
local EV_WAKE_TOKEN = C.MF_EV_WAKE_TOKEN
-- The thread interface of outbound sockets (moonfcgi.socket): a thread per request, waits on
-- a token that C wakes with MF_EV_WAKE_TOKEN, and cleanups that run when the request ends.
-- A stopgap in today's one-coroutine-per-request scheduler; the scheduler's rewrite (nested
-- coroutines, timers) keeps these five functions. WAIT_TOKEN: what the coroutine yields.
local WAIT_TOKEN = {}
local token_seq = 0
local threads = setmetatable({}, { __mode = "k" }) -- request object -> thread
local token_waiters = {} -- token -> slot
local FINISH_OK, FINISH_ERROR, FINISH_TIMEOUT =
    C.MF_FINISH_OK, C.MF_FINISH_ERROR, C.MF_FINISH_TIMEOUT

local LOG = { error = 0, warn = 1, info = 2, debug = 3 }
local ROLE_HANDLER = { "respond", "authorize", "filter" }
local ROLE_NAMES = { "responder", "authorizer", "filter" }

-- What a handler coroutine yields to the scheduler. EXIT: the handler ended from deep in
-- its stack (ngx.exit); its coroutine is abandoned, not pooled.
local DONE, WAIT_IO, WAIT_SLEEP, EXIT = {}, {}, {}, {}

local _M = { runtimes = {} }
local Runtime = {}
Runtime.__index = Runtime

-- The runtime and slot whose coroutine is running now.
local current_rt, current_slot
-- The runtime whose app is being loaded (its top level runs outside any coroutine of ours).
local loading_rt

local function log(level, msg)
    if LOG[level] <= C.mf_ffi_log_level() then
        C.mf_ffi_log(LOG[level], msg, #msg)
    end
end
_M.log = log

-- A pooled coroutine runs one handler after another; an error ends it for good.
local function body(handler, req)
    while true do
        local rc = handler(req)
        handler, req = co_yield(DONE, rc)
    end
end

local function app_dir(path)
    return path:match("^(.*)/[^/]*$") or "."
end

-- Puts the app's folder first on the module paths (docs/api.md, "The app file").
local function add_app_dir(dir)
    local p = dir .. "/?.lua;" .. dir .. "/?/init.lua;"
    if package.path:sub(1, #p) ~= p then
        package.path = p .. package.path
        package.cpath = dir .. "/?.so;" .. package.cpath
    end
end

-- How the app's files are read during a load. Outside a load, `require` uses Lua's own
-- searchers. ctx = { dir = the app's folder, read = function(path) -> source | nil, err,
-- record = nil or a table that collects path -> source of every file read }.
local loading

local function read_disk(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local src = f:read("*a")
    f:close()
    return src
end

-- The last version that passed its check, as the master published it (src/snapshot.c): a
-- worker started after a refused reload (one replacing a worker that died) loads that, not a
-- broken file on disk.
local snap_len = ffi.new("size_t[1]")
local function read_snapshot(path)
    local p = C.mf_ffi_snapshot_file(path, snap_len)
    if p ~= nil then
        return ffi.string(p, snap_len[0])
    end
    return read_disk(path)
end

-- Modules of the app's own folder, during a load: read once through ctx.read and compiled
-- from that buffer, so what runs is what was read (and what the master checked).
local function app_searcher(name)
    local ctx = loading
    if not ctx then
        return nil
    end
    local file = package.searchpath(name, ctx.dir .. "/?.lua;" .. ctx.dir .. "/?/init.lua")
    if not file then
        return "\n\tno file in the app's folder for '" .. name .. "'"
    end
    local src, err = ctx.read(file)
    if not src then
        error("cannot read module '" .. name .. "' from " .. file .. ": " .. tostring(err), 0)
    end
    if ctx.record then
        ctx.record[file] = src
    end
    local chunk, cerr = loadstring(src, "@" .. file)
    if not chunk then
        error("error loading module '" .. name .. "' from file '" .. file .. "':\n\t" .. cerr, 0)
    end
    return chunk
end
table.insert(package.loaders, 2, app_searcher)

local function run_app(path, ctx)
    -- Libraries copy ngx.* into locals when they are required: the global must exist before
    -- the first line of the app runs (cosocket.md section 5).
    if rawget(_G, "ngx") == nil then
        require "moonfcgi.ngx"
    end
    local src, err = ctx.read(path)
    if not src then
        return nil, "cannot open app: " .. tostring(err)
    end
    if ctx.record then
        ctx.record[path] = src
    end
    local chunk, cerr = loadstring(src, "@" .. path)
    if not chunk then
        return nil, cerr
    end
    local prev = loading
    loading = ctx
    local ok, ret = xpcall(chunk, traceback)
    loading = prev
    return ok, ret
end

-- Loads the app file; ctx as above (default: from disk). Returns the handlers table, or
-- nil and the error.
function _M.load_app(path, ctx)
    ctx = ctx or { dir = app_dir(path), read = read_disk }
    local ok, ret = run_app(path, ctx)
    if ok == nil then
        return nil, ret
    end
    if not ok then
        -- The frames from xpcall down are moonfcgi's own loader: noise to the app's author.
        local msg = tostring(ret)
        local cut = msg:find("\n%s*%[C%]: in function 'xpcall'")
        return nil, cut and msg:sub(1, cut - 1) or msg
    end
    if type(ret) == "function" then
        return { respond = ret }
    end
    if type(ret) == "table" then
        local handlers, n = {}, 0
        for _, name in ipairs(ROLE_HANDLER) do
            local h = ret[name]
            if h ~= nil then
                if type(h) ~= "function" then
                    return nil, path .. ": '" .. name .. "' must be a function, not a " .. type(h)
                end
                handlers[name] = h
                n = n + 1
            end
        end
        if n > 0 then
            return handlers
        end
    end
    return nil, path .. ": the app must return a function (the responder) or a table with "
        .. "respond, authorize and/or filter functions"
end

-- shared: name -> dictionary for this runtime's app (moonfcgi.test's private ones);
-- default: the dictionaries of --shared.
function _M.new(w, shared)
    local rt = setmetatable({
        w = w,
        shared = shared or shdict.declared(),
        cos = {},        -- slot -> coroutine
        reqs = {},       -- slot -> request object
        serials = {},    -- slot -> serial of the request in it
        waits = {},      -- slot -> WAIT_IO or WAIT_SLEEP
        sleep_timer = {}, sleep_token = {},
        sleepers = {},   -- timer token -> slot
        pool = {}, npool = 0,
        token = 0,
        version = 0,
        evp = ffi.new("mf_event_t *[1]"),
        relp = ffi.new("uint64_t *[1]"),
    }, Runtime)
    _M.runtimes[#_M.runtimes + 1] = rt
    return rt
end

-- Called once the worker's connections and requests are gone (mf_ffi_worker_close), before
-- the worker is freed: request objects a spec kept stop pointing into the worker (their
-- methods raise "the request has ended"), and the strings the freed output referenced are
-- unpinned.
function Runtime:close()
    for _, req in pairs(self.reqs) do
        req._r = nil
    end
    self.reqs, self.cos, self.waits, self.serials = {}, {}, {}, {}
    self.sleep_timer, self.sleep_token, self.sleepers = {}, {}, {}
    self:unpin()
    for i, rt in ipairs(_M.runtimes) do
        if rt == self then
            table.remove(_M.runtimes, i)
            break
        end
    end
end

local function roles_mask(handlers)
    local mask = 0
    for role, name in ipairs(ROLE_HANDLER) do
        if handlers[name] then
            mask = mask + 2 ^ role
        end
    end
    return mask
end

-- Loads (or reloads) the app; on failure the handlers in place keep serving. With
-- from_snapshot, files come from the master's copy of the last version that loaded.
function Runtime:load(path, from_snapshot)
    self.path = path or self.path
    local dir = app_dir(self.path)
    add_app_dir(dir)
    local saved = {}
    if self.handlers then
        -- A reload takes fresh copies of the app's own modules too; the old ones come back
        -- if the new version does not load.
        local patterns = dir .. "/?.lua;" .. dir .. "/?/init.lua"
        for name, mod in pairs(package.loaded) do
            if package.searchpath(name, patterns) then
                saved[name] = mod
                package.loaded[name] = nil
            end
        end
    end
    local prev_loading = loading_rt
    loading_rt = self
    local handlers, err = _M.load_app(self.path,
        { dir = dir, read = from_snapshot and read_snapshot or read_disk })
    loading_rt = prev_loading
    if not handlers then
        for name, mod in pairs(saved) do
            package.loaded[name] = mod
        end
        C.mf_ffi_worker_app_loaded(self.w, self.version, 0)
        return nil, err
    end
    self.handlers = handlers
    self.version = C.mf_ffi_worker_next_version(self.w)
    C.mf_ffi_worker_set_roles(self.w, roles_mask(handlers))
    C.mf_ffi_worker_app_loaded(self.w, self.version, 1)
    return handlers
end

function Runtime:reload()
    -- Under a master, the code it checked (shared with us); otherwise the files on disk.
    local ok, err = self:load(nil, C.mf_ffi_snapshot_refresh() == 0)
    if ok then
        log("info", "worker " .. C.mf_ffi_worker_number(self.w) .. ": app version "
            .. self.version .. " loaded from " .. self.path)
    else
        log("error", "worker " .. C.mf_ffi_worker_number(self.w) .. ": reload failed, version "
            .. self.version .. " keeps serving: " .. tostring(err))
    end
    return ok, err
end

local function app_status(rc)
    if type(rc) ~= "number" or rc ~= rc then
        return 0
    end
    rc = math_floor(rc)
    if rc < 0 or rc > 4294967295 then
        return 0
    end
    return rc
end

function Runtime:finish(slot, rc, how)
    local req = self.reqs[slot]
    local r = req._r
    local timer = self.sleep_timer[slot]
    if timer then
        C.mf_ffi_timer_cancel(self.w, timer, self.sleep_token[slot])
        self.sleepers[self.sleep_token[slot]] = nil
        self.sleep_timer[slot], self.sleep_token[slot] = nil, nil
    end
    self.reqs[slot], self.cos[slot], self.waits[slot], self.serials[slot] = nil, nil, nil, nil
    local th = threads[req]
    threads[req] = nil
    if th then
        th.ended = true
        if th.token then
            token_waiters[th.token] = nil
        end
        for k, fn in pairs(th.cleanups) do
            th.cleanups[k] = nil
            local ok, err = pcall(fn)
            if not ok then
                log("error", "a cleanup of request " .. req.id .. " failed: " .. tostring(err))
            end
        end
    end
    req._r = nil
    C.mf_ffi_req_finish(r, rc, how)
end

function Runtime:failed(slot, co, err)
    local req = self.reqs[slot]
    local tb = traceback(co, tostring(err))
    local msg = "handler error (" .. req.role .. " request " .. req.id .. "): " .. tb
    log("error", msg)
    if req._r ~= nil then
        C.mf_ffi_req_stderr(req._r, msg .. "\n", #msg + 1)
    end
    self:finish(slot, 1, FINISH_ERROR)
end

function Runtime:run(slot, co, a, b)
    current_rt, current_slot = self, slot
    local ok, what, rc = co_resume(co, a, b)
    current_rt, current_slot = nil, nil
    if not ok then
        return self:failed(slot, co, what)
    end
    if what == DONE then
        self:finish(slot, app_status(rc), FINISH_OK)
        if self.npool < 256 then
            self.npool = self.npool + 1
            self.pool[self.npool] = co
        end
    elseif what == WAIT_IO or what == WAIT_SLEEP or what == WAIT_TOKEN then
        self.waits[slot] = what
    elseif what == EXIT then
        self:finish(slot, app_status(rc), FINISH_OK)
    else
        self:failed(slot, co, "the handler yielded outside of a moonfcgi call "
            .. "(coroutine.yield from a handler is not supported)")
    end
end

function Runtime:start(e)
    local slot = e.slot
    local role = e.role
    local h = self.handlers[ROLE_HANDLER[role]]
    local req = request.new(e.req, e.id, ROLE_NAMES[role], e.keep_conn ~= 0)
    self.reqs[slot], self.serials[slot] = req, e.serial
    if not h then
        -- A reload removed this role after the request began.
        local msg = "the app has no " .. ROLE_HANDLER[role] .. " handler"
        log("error", msg)
        return self:finish(slot, 1, FINISH_ERROR)
    end
    local co
    if self.npool > 0 then
        co = self.pool[self.npool]
        self.pool[self.npool] = nil
        self.npool = self.npool - 1
    else
        co = co_create(body)
    end
    self.cos[slot] = co
    return self:run(slot, co, h, req)
end

function Runtime:kill(slot, why)
    local req = self.reqs[slot]
    log("warn", "request " .. req.id .. " (" .. req.role .. ") ended: " .. why)
    self:finish(slot, 1, FINISH_TIMEOUT)
end

-- One turn of the loop: writes pending output, waits up to timeout_ms (-1: until something
-- happens) and handles what happened. Returns false once the worker has stopped.
function Runtime:step(timeout_ms)
    local n = C.mf_ffi_worker_poll(self.w, timeout_ms, self.evp)
    self:unpin()
    if n < 0 then
        return false
    end
    local evs = self.evp[0]
    for i = 0, n - 1 do
        local e = evs[i]
        local t, slot = e.type, e.slot
        if t == EV_NEW then
            self:start(e)
        elseif t == EV_WAKE then
            if self.serials[slot] == e.serial and self.waits[slot] == WAIT_IO then
                self.waits[slot] = nil
                self:run(slot, self.cos[slot])
            end
        elseif t == EV_WAKE_TOKEN then
            local token = tonumber(e.token)
            local s = token_waiters[token]
            if s and self.waits[s] == WAIT_TOKEN then
                token_waiters[token] = nil
                self.waits[s] = nil
                self:run(s, self.cos[s])
            end
        elseif t == EV_TIMER then
            local token = tonumber(e.token)
            local s = self.sleepers[token]
            if s then
                self.sleepers[token] = nil
                self.sleep_timer[s], self.sleep_token[s] = nil, nil
                if self.waits[s] == WAIT_SLEEP then
                    self.waits[s] = nil
                    self:run(s, self.cos[s])
                end
            end
        elseif t == EV_TIMEOUT or t == EV_KILL then
            if self.serials[slot] == e.serial then
                self:kill(slot, t == EV_TIMEOUT and "the handler ran past --timeout"
                    or "the worker is stopping")
            end
        elseif t == EV_RELOAD then
            self:reload()
        end
    end
    return true
end

-- Strings whose bytes a connection's output references (request.lua's large writes), by
-- slot, with the number of references libevent still holds. Slots of released strings are
-- reused, so the tables stay arrays (ever-growing keys made them rehash every few writes);
-- the token handed to C is the slot tagged with its generation, which grows at each reuse,
-- so a stray or late release of an earlier string in the same slot is told from a release
-- of the string pinned there now, and ignored. Tokens are unique in the process, across
-- runtimes, and stay below 2^53 so that a double holds them exactly.
local PIN_SLOTS = 4294967296 -- token = generation * PIN_SLOTS + slot
local PIN_GENERATIONS = 2097152 -- 2^21 generations per slot, then they start again at 1
local pins, pin_refs, pin_gens = {}, {}, {}
local free_pins, nfree_pins, top_pin = {}, 0, 0

local function unpin_slot(slot)
    pins[slot], pin_refs[slot] = nil, nil
    nfree_pins = nfree_pins + 1
    free_pins[nfree_pins] = slot
end

function request.pin(s)
    local slot
    if nfree_pins > 0 then
        slot = free_pins[nfree_pins]
        free_pins[nfree_pins] = nil
        nfree_pins = nfree_pins - 1
    else
        top_pin = top_pin + 1
        slot = top_pin
    end
    local gen = (pin_gens[slot] or 0) + 1
    if gen >= PIN_GENERATIONS then
        gen = 1
    end
    pin_gens[slot] = gen
    pins[slot] = s
    return gen * PIN_SLOTS + slot
end

-- The slot of token when its string is the one pinned there now, else nil.
local function live_slot(token)
    local slot = token % PIN_SLOTS
    if pins[slot] == nil or pin_gens[slot] * PIN_SLOTS + slot ~= token then
        return nil
    end
    return slot
end

function request.pinned(token, n)
    local slot = live_slot(token)
    if not slot then
        return
    end
    if n == 0 then
        unpin_slot(slot)
    else
        pin_refs[slot] = n
    end
end

-- libevent let go of one reference to token's string: the last one unpins it. Returns false
-- for a token whose string is not pinned now (a stale or late release), which is ignored.
function _M.release_pin(token)
    local slot = live_slot(token)
    if not slot then
        log("debug", "release of pin token " .. token .. " whose string is not pinned; ignored")
        return false
    end
    local left = (pin_refs[slot] or 1) - 1
    if left <= 0 then
        unpin_slot(slot)
    else
        pin_refs[slot] = left
    end
    return true
end
local release_pin = _M.release_pin

-- Strings pinned now (for specs: every one is released once its bytes are sent).
function _M.pinned_count()
    return top_pin - nfree_pins
end

function Runtime:unpin()
    local n = C.mf_ffi_worker_released(self.w, self.relp)
    if n == 0 then
        return
    end
    local tokens = self.relp[0]
    for i = 0, n - 1 do
        release_pin(tonumber(tokens[i]))
    end
end

-- For request.lua and moonfcgi.sleep: waits in the current handler's coroutine.
local function in_handler(level)
    local rt, slot = current_rt, current_slot
    if not rt or co_running() ~= rt.cos[slot] then
        error("this call waits, and can only be made in a handler's own coroutine", level + 1)
    end
    return rt, slot
end

function _M.wait_io()
    in_handler(3)
    co_yield(WAIT_IO)
end
request.wait_io = _M.wait_io

-- Ends the current handler now, as if it had returned rc (ngx.exit); never returns.
function _M.exit(rc)
    in_handler(3)
    co_yield(EXIT, rc)
end

-- The request whose handler runs now (in its coroutine or one it resumed), or nil.
function _M.current_request()
    local rt = current_rt
    return rt and rt.reqs[current_slot]
end

-- The thread running now (a request's handler), or nil (the app loading, a spec's own code).
-- Fields: id, req, kind ("request"), ctx.
function _M.current_thread()
    local rt, slot = current_rt, current_slot
    if not rt or co_running() ~= rt.cos[slot] then
        return nil
    end
    local req = rt.reqs[slot]
    local th = threads[req]
    if not th then
        th = { id = slot, req = req, kind = "request", ctx = {}, cleanups = {} }
        threads[req] = th
    end
    return th
end
-- A number unique in the process (< 2^52), for C to wake a wait with.
function _M.new_token()
    token_seq = token_seq + 1
    return token_seq
end

-- Suspends the current thread until an MF_EV_WAKE_TOKEN event carries token (or the thread
-- ends: then it never returns). Wake-ups may be spurious: callers check and wait again.
function _M.wait(token)
    local rt, slot = in_handler(2)
    local th = threads[rt.reqs[slot]]
    if th then
        th.token = token
    end
    token_waiters[token] = slot
    co_yield(WAIT_TOKEN)
    if th then
        th.token = nil
    end
end

-- fn() runs once when thread th ends, however it ends, unless removed first.
function _M.add_cleanup(th, key, fn)
    th.cleanups[key] = fn
end

function _M.remove_cleanup(th, key)
    th.cleanups[key] = nil
end

-- Whether an app is being loaded now (its top level runs: OpenResty's "init" phase).
function _M.loading()
    return loading ~= nil
end

local function clock()
    return C.mf_ffi_worker_now(current_rt and current_rt.w or _M.runtimes[1].w)
end

function _M.sleep(seconds)
    local rt = current_rt
    if rt and co_running() == rt.cos[current_slot] then
        local slot = current_slot
        local token = rt.token + 1
        rt.token = token
        rt.sleepers[token] = slot
        rt.sleep_token[slot] = token
        rt.sleep_timer[slot] = C.mf_ffi_timer_start(rt.w, seconds, token)
        co_yield(WAIT_SLEEP)
        return
    end
    -- Outside a handler (a spec's own code): keep every loaded app running meanwhile.
    _M.drive(seconds)
end

-- Runs the loops of the runtimes of this process for about `seconds`.
function _M.drive(seconds, until_fn)
    local rts = _M.runtimes
    if #rts == 0 then
        ffi.C.poll(nil, 0, math_floor(seconds * 1000))
        return
    end
    local start = clock()
    repeat
        for i = 1, #rts do
            local left = seconds - (clock() - start)
            local ms = #rts == 1 and math_floor(left * 1000) or 1
            rts[i]:step(ms > 0 and ms or 0)
            C.mf_ffi_worker_flush(rts[i].w)
        end
        if until_fn and until_fn() then
            return true
        end
    until clock() - start >= seconds
    return false
end

function _M.now()
    local rt = current_rt or _M.runtimes[1]
    if rt then
        return C.mf_ffi_worker_now(rt.w)
    end
    return os.time()
end

-- The app file of the runtime that runs the current code, or nil.
function _M.app_path()
    local rt = current_rt or _M.runtimes[1]
    return rt and rt.path
end

-- The worker whose loop runs the current code (the first one in specs), or nil.
function _M.worker()
    local rt = current_rt or _M.runtimes[1]
    return rt and rt.w
end

-- The dictionaries moonfcgi.shared names: those of the app running (or loading) now.
function _M.shared()
    local rt = current_rt or loading_rt or _M.runtimes[1]
    return rt and rt.shared or shdict.declared()
end

function _M.worker_number()
    local rt = current_rt or _M.runtimes[1]
    return rt and C.mf_ffi_worker_number(rt.w) or 1
end

-- Entry points of the moonfcgi binary (src/vm.c).

function _M.serve(path)
    local w = C.mf_ffi_worker_current()
    local rt = _M.new(w)
    -- The last version the master accepted, read from the memfd it shares with us.
    local ok, err = rt:load(path, C.mf_ffi_snapshot_refresh() == 0)
    local n = C.mf_ffi_worker_number(w)
    if not ok then
        log("error", "worker " .. n .. ": cannot load " .. path .. ": " .. tostring(err))
        return 1
    end
    log("info", "worker " .. n .. ": app version " .. rt.version .. " loaded from " .. path)
    while rt:step(-1) do
    end
    log("info", "worker " .. n .. ": stopped")
    return 0
end

-- The check (src/check.c), in its throwaway process: returns nil and the files read (path ->
-- source), or the error.
function _M.check(path)
    -- A top level that exits is refused with the place it exits from.
    os.exit = function(code)
        error("os.exit(" .. tostring(code) .. ") called while the app loads", 2)
    end
    local dir = app_dir(path)
    add_app_dir(dir)
    local record = {}
    local ok, err = _M.load_app(path, { dir = dir, read = read_disk, record = record })
    if not ok then
        return err
    end
    return nil, record
end

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

return _M
