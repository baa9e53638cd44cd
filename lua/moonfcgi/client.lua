-- A FastCGI client over real sockets, in LuaJIT through the FFI: what the specs use to talk to
-- a running host (or, with wrap_fd, to one end of a socketpair). It plays the web server: it
-- sends requests built by moonfcgi.proto and collects each request's answer.
--
-- Every socket is non-blocking and every wait is a poll() bounded by the connection's timeout,
-- so a spec can fail but never hang. Linux x86_64 only: the struct layouts below are that
-- ABI's.

local ffi = require "ffi"
local bit = require "bit"
local proto = require "moonfcgi.proto"

local type = type
local tostring = tostring
local tonumber = tonumber
local error = error
local pcall = pcall
local pairs = pairs
local math_floor = math.floor
local setmetatable = setmetatable
local math_ceil = math.ceil
local math_max = math.max
local string_find = string.find
local string_match = string.match
local ffi_new = ffi.new
local ffi_cast = ffi.cast
local ffi_string = ffi.string
local ffi_errno = ffi.errno
local ffi_gc = ffi.gc
local band = bit.band
local bor = bit.bor

-- Unique names with asm labels, so that another module's declarations of the same libc
-- functions or structs cannot clash with these; each one in its own pcall so loading this
-- file twice is harmless.
local cdefs = {
  "struct mf_client_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4];"
    .. " uint8_t zero[8]; };",
  "struct mf_client_sockaddr_in6 { uint16_t family; uint16_t port; uint32_t flowinfo;"
    .. " uint8_t addr[16]; uint32_t scope_id; };",
  "struct mf_client_sockaddr_un { uint16_t family; char path[108]; };",
  "struct mf_client_pollfd { int fd; short events; short revents; };",
  "struct mf_client_timespec { long sec; long nsec; };",
  "struct mf_client_addrinfo { int flags; int family; int socktype; int protocol;"
    .. " uint32_t addrlen; void *addr; char *canonname; struct mf_client_addrinfo *next; };",
  "int mf_client_socket(int, int, int) __asm__(\"socket\");",
  "int mf_client_socketpair(int, int, int, int *) __asm__(\"socketpair\");",
  "int mf_client_connect(int, const void *, uint32_t) __asm__(\"connect\");",
  "int mf_client_shutdown(int, int) __asm__(\"shutdown\");",
  "int mf_client_close(int) __asm__(\"close\");",
  "long mf_client_read(int, void *, size_t) __asm__(\"read\");",
  "long mf_client_write(int, const void *, size_t) __asm__(\"write\");",
  "long mf_client_send(int, const void *, size_t, int) __asm__(\"send\");",
  "int mf_client_poll(struct mf_client_pollfd *, unsigned long, int) __asm__(\"poll\");",
  "int mf_client_fcntl(int, int, ...) __asm__(\"fcntl\");",
  "int mf_client_setsockopt(int, int, int, const void *, uint32_t) __asm__(\"setsockopt\");",
  "int mf_client_getsockopt(int, int, int, void *, uint32_t *) __asm__(\"getsockopt\");",
  "int mf_client_inet_pton(int, const char *, void *) __asm__(\"inet_pton\");",
  "int mf_client_getaddrinfo(const char *, const char *, const struct mf_client_addrinfo *,"
    .. " struct mf_client_addrinfo **) __asm__(\"getaddrinfo\");",
  "void mf_client_freeaddrinfo(struct mf_client_addrinfo *) __asm__(\"freeaddrinfo\");",
  "const char *mf_client_gai_strerror(int) __asm__(\"gai_strerror\");",
  "char *mf_client_strerror(int) __asm__(\"strerror\");",
  "int mf_client_clock_gettime(int, struct mf_client_timespec *) __asm__(\"clock_gettime\");",
}
for i = 1, #cdefs do
  local ok, err = pcall(ffi.cdef, cdefs[i])
  if not ok and not string_find(tostring(err), "redefine", 1, true) then
    error(err)
  end
end

local C = ffi.C

local AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6 = 0, 1, 2, 10
local SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC = 1, 2048, 524288
local F_GETFL, F_SETFL, O_NONBLOCK = 3, 4, 2048
local POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 1, 4, 8, 16, 32
local EINTR, EAGAIN, EPIPE, ENOTSOCK, EINPROGRESS, ECONNRESET = 4, 11, 32, 88, 115, 104
local MSG_NOSIGNAL = 0x4000
local SHUT_WR = 1
local SOL_SOCKET, SO_ERROR = 1, 4
local IPPROTO_TCP, TCP_NODELAY = 6, 1
local CLOCK_MONOTONIC = 1
local READ_SIZE = 65536

local STDOUT, STDERR, END_REQUEST = proto.STDOUT, proto.STDERR, proto.END_REQUEST
local GET_VALUES_RESULT = proto.GET_VALUES_RESULT

local sockaddr_in_t = ffi.typeof("struct mf_client_sockaddr_in")
local sockaddr_in6_t = ffi.typeof("struct mf_client_sockaddr_in6")
local sockaddr_un_t = ffi.typeof("struct mf_client_sockaddr_un")
local pollfd_t = ffi.typeof("struct mf_client_pollfd[1]")
local int1_t = ffi.typeof("int[1]")
local int2_t = ffi.typeof("int[2]")
local uint32_1_t = ffi.typeof("uint32_t[1]")
local timespec = ffi_new("struct mf_client_timespec")
local read_buf = ffi_new("uint8_t[?]", READ_SIZE)

local _M = { _VERSION = "0.1.0" }

local function strerror(e)
  return ffi_string(C.mf_client_strerror(e))
end

local function now()
  C.mf_client_clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.sec) + tonumber(timespec.nsec) * 1e-9
end
_M.now = now

local function htons(n)
  return bor(bit.rshift(n, 8), band(bit.lshift(n, 8), 0xff00))
end

-- Waits for events on fd until the deadline. Returns revents (0 on timeout), or nil, err.
-- With idle (the in-process test harness), the wait never blocks here: idle(seconds_left)
-- runs the server's loop between non-blocking polls.
local function poll_fd(fd, events, deadline, idle)
  local pfd = pollfd_t()
  while true do
    local ms = math_max(0, math_ceil((deadline - now()) * 1000))
    if idle then
      ms = 0
    end
    pfd[0].fd = fd
    pfd[0].events = events
    pfd[0].revents = 0
    local rc = C.mf_client_poll(pfd, 1, ms)
    if rc > 0 or (rc == 0 and (not idle or now() >= deadline)) then
      return pfd[0].revents
    end
    if rc == 0 then
      idle(deadline - now())
    else
      local e = ffi_errno()
      if e ~= EINTR then
        return nil, "poll: " .. strerror(e)
      end
    end
  end
end

-- poll_fd for a connection: its revents, or nil, "timeout", "closed" or the poll error.
local function wait_ready(self, events, deadline)
  local revents, err = poll_fd(self.fd, events, deadline, self.idle)
  if not revents then
    return nil, err
  end
  if revents == 0 then
    return nil, "timeout"
  end
  if band(revents, POLLNVAL) ~= 0 then
    return nil, "closed"
  end
  return revents
end

local function set_nonblocking(fd)
  local flags = C.mf_client_fcntl(fd, F_GETFL)
  if flags < 0 then
    return nil, "fcntl: " .. strerror(ffi_errno())
  end
  if C.mf_client_fcntl(fd, F_SETFL, ffi_cast("int", bor(flags, O_NONBLOCK))) < 0 then
    return nil, "fcntl: " .. strerror(ffi_errno())
  end
  return true
end

local Conn = {}
Conn.__index = Conn

local function close_fd_box(box)
  if box[0] >= 0 then
    C.mf_client_close(box[0])
    box[0] = -1
  end
end

-- Takes ownership of fd: conn:close() closes it, and so does the garbage collector for a
-- connection that was never closed.
local function new_conn(fd, opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("options must be a table", 3)
  end
  local timeout = opts.timeout or 30
  if type(timeout) ~= "number" or timeout < 0 then
    error("timeout must be a non-negative number of seconds", 3)
  end
  local box = int1_t(fd)
  return setmetatable({
    fd = fd,
    timeout = timeout,
    idle = opts.idle,
    box = ffi_gc(box, close_fd_box),
    parser = proto.parser(),
    collectors = {}, -- id -> proto.response() for requests in flight
    results = {},    -- id -> collector whose END_REQUEST arrived, not yet waited for
    queue = {},      -- records no collector claimed, oldest first, in queue[qhead..qtail]
    qhead = 1,
    qtail = 0,
    -- Counters a spec can look at: bytes written and read, writes that took only part of
    -- what was offered, and waits for the peer to read.
    stats = { sent = 0, received = 0, partial_writes = 0, write_waits = 0 },
    eof = false,     -- the peer closed its side (or reset the connection)
    reset = false,
    err = nil,       -- a sticky protocol error ("bad version")
  }, Conn)
end

-- Wraps an already-open socket (e.g. one end of a socketpair); the connection owns it and
-- makes it non-blocking.
function _M.wrap_fd(fd, opts)
  if type(fd) ~= "number" or fd < 0 or fd ~= math_floor(fd) then
    error("wrap_fd needs a file descriptor number", 2)
  end
  local ok, err = set_nonblocking(fd)
  if not ok then
    return nil, err
  end
  return new_conn(fd, opts)
end

-- Two connected AF_UNIX stream sockets, for a spec that plays both sides.
function _M.socketpair()
  local fds = int2_t()
  if C.mf_client_socketpair(AF_UNIX, bor(SOCK_STREAM, SOCK_CLOEXEC), 0, fds) < 0 then
    return nil, "socketpair: " .. strerror(ffi_errno())
  end
  return fds[0], fds[1]
end

-- Returns a list of { family, sockaddr cdata, length } or nil, err.
local function resolve(addr)
  local path = string_match(addr, "^unix:(.+)$")
  if path then
    if #path > 107 then
      return nil, "unix socket path too long"
    end
    local sa = sockaddr_un_t()
    sa.family = AF_UNIX
    ffi.copy(sa.path, path)
    return { { AF_UNIX, sa, 2 + #path + 1 } }
  end
  local host, port = string_match(addr, "^%[([^%]]+)%]:(%d+)$")
  if not host then
    host, port = string_match(addr, "^([^:]+):(%d+)$")
  end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 then
    return nil, "invalid address '" .. addr .. "'"
  end
  local sa4 = sockaddr_in_t()
  if C.mf_client_inet_pton(AF_INET, host, sa4.addr) == 1 then
    sa4.family = AF_INET
    sa4.port = htons(port)
    return { { AF_INET, sa4, ffi.sizeof(sa4) } }
  end
  local sa6 = sockaddr_in6_t()
  if C.mf_client_inet_pton(AF_INET6, host, sa6.addr) == 1 then
    sa6.family = AF_INET6
    sa6.port = htons(port)
    return { { AF_INET6, sa6, ffi.sizeof(sa6) } }
  end
  local hints = ffi_new("struct mf_client_addrinfo")
  hints.family = AF_UNSPEC
  hints.socktype = SOCK_STREAM
  local res = ffi_new("struct mf_client_addrinfo *[1]")
  local rc = C.mf_client_getaddrinfo(host, tostring(port), hints, res)
  if rc ~= 0 then
    return nil, "getaddrinfo " .. host .. ": " .. ffi_string(C.mf_client_gai_strerror(rc))
  end
  local out = {}
  local ai = res[0]
  while ai ~= nil do
    if ai.family == AF_INET or ai.family == AF_INET6 then
      local len = ai.addrlen
      local sa = ffi_new("uint8_t[?]", len)
      ffi.copy(sa, ai.addr, len)
      out[#out + 1] = { ai.family, sa, len }
    end
    ai = ai.next
  end
  C.mf_client_freeaddrinfo(res[0])
  if #out == 0 then
    return nil, "no address for " .. host
  end
  return out
end

local function connect_one(family, sa, len, deadline)
  local fd = C.mf_client_socket(family, bor(SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC), 0)
  if fd < 0 then
    return nil, "socket: " .. strerror(ffi_errno())
  end
  local rc = C.mf_client_connect(fd, sa, len)
  if rc < 0 then
    local e = ffi_errno()
    if e ~= EINPROGRESS and e ~= EINTR then
      C.mf_client_close(fd)
      return nil, "connect: " .. strerror(e)
    end
    local revents, err = poll_fd(fd, POLLOUT, deadline)
    if not revents or revents == 0 then
      C.mf_client_close(fd)
      return nil, err or "timeout"
    end
    local soerr = int1_t()
    local slen = uint32_1_t(4)
    C.mf_client_getsockopt(fd, SOL_SOCKET, SO_ERROR, soerr, slen)
    if soerr[0] ~= 0 then
      C.mf_client_close(fd)
      return nil, "connect: " .. strerror(soerr[0])
    end
  end
  if family ~= AF_UNIX then
    C.mf_client_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, int1_t(1), 4)
  end
  return fd
end

-- Connects to "host:port", "[v6addr]:port" or "unix:/path" (or wraps an fd number). Returns
-- the connection or nil, err. opts.timeout (seconds, default 30) bounds each call's waits.
function _M.connect(addr, opts)
  if type(addr) == "number" then
    return _M.wrap_fd(addr, opts)
  end
  if type(addr) ~= "string" then
    error("connect needs an address string", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("options must be a table", 2)
  end
  local timeout = opts and opts.timeout or 30
  local addrs, err = resolve(addr)
  if not addrs then
    return nil, err
  end
  local deadline = now() + timeout
  for i = 1, #addrs do
    local a = addrs[i]
    local fd
    fd, err = connect_one(a[1], a[2], a[3], deadline)
    if fd then
      return new_conn(fd, opts)
    end
  end
  return nil, err
end

-- Reads what the socket has (at most one buffer) into the parser. Returns true, or nil, err
-- with err "closed" once the peer closed; "again" when nothing was there.
local function read_some(self)
  if self.eof then
    return nil, "closed"
  end
  while true do
    local n = tonumber(C.mf_client_read(self.fd, read_buf, READ_SIZE))
    if n > 0 then
      self.stats.received = self.stats.received + n
      self.parser:feed(ffi_string(read_buf, n))
      return true
    end
    if n == 0 then
      self.eof = true
      return nil, "closed"
    end
    local e = ffi_errno()
    if e == EAGAIN then
      return nil, "again"
    end
    if e ~= EINTR then
      self.eof = true
      self.reset = e == ECONNRESET
      if e == ECONNRESET then
        return nil, "closed"
      end
      return nil, "read: " .. strerror(e)
    end
  end
end

-- Routes every whole record buffered: to its request's collector when it is that request's
-- output, else to the queue read_record serves. Returns true or nil, "bad version".
local function pump(self)
  local parser = self.parser
  local collectors = self.collectors
  while true do
    local rec, err = parser:next()
    if not rec then
      if err then
        self.err = err
        return nil, err
      end
      return true
    end
    local c = collectors[rec.id]
    local t = rec.type
    if c and rec.id ~= 0 and (t == STDOUT or t == STDERR or t == END_REQUEST) then
      if c:add(rec) then
        collectors[rec.id] = nil
        self.results[rec.id] = c
      end
    else
      local tail = self.qtail + 1
      self.queue[tail] = rec
      self.qtail = tail
    end
  end
end

-- Reads once, waiting until the deadline. Returns true when bytes came, or nil, err
-- ("timeout", "closed", ...).
local function fill(self, deadline)
  if self.fd < 0 then
    return nil, "closed"
  end
  local ok, err = read_some(self)
  if ok then
    return pump(self)
  end
  if err ~= "again" then
    return nil, err
  end
  local revents
  revents, err = wait_ready(self, POLLIN, deadline)
  if not revents then
    return nil, err
  end
  ok, err = read_some(self)
  if ok then
    return pump(self)
  end
  if err == "again" then
    return true
  end
  return nil, err
end

local function deadline_of(self, timeout)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("timeout must be a non-negative number of seconds", 3)
  end
  return now() + (timeout or self.timeout)
end

-- Writes all of data before the deadline. While the peer does not read, what it sends is
-- read and routed, so a peer that answers before it reads everything cannot deadlock us.
local function write_all(self, data, deadline)
  if self.fd < 0 then
    return nil, "closed"
  end
  local len = #data
  local off = 0
  local p = ffi_cast("const uint8_t *", data)
  while off < len do
    local n
    if self.no_send then
      n = tonumber(C.mf_client_write(self.fd, p + off, len - off))
    else
      n = tonumber(C.mf_client_send(self.fd, p + off, len - off, MSG_NOSIGNAL))
    end
    if n >= 0 then
      if n < len - off then
        self.stats.partial_writes = self.stats.partial_writes + 1
      end
      off = off + n
      self.stats.sent = self.stats.sent + n
    else
      local e = ffi_errno()
      if e == ENOTSOCK then
        self.no_send = true
      elseif e == EPIPE or e == ECONNRESET then
        self.reset = self.reset or e == ECONNRESET
        -- What the peer sent before it went away is still worth reading.
        while read_some(self) do
          pump(self)
        end
        return nil, "closed"
      elseif e ~= EAGAIN and e ~= EINTR then
        return nil, "write: " .. strerror(e)
      elseif e == EAGAIN then
        self.stats.write_waits = self.stats.write_waits + 1
        local events = POLLOUT
        if not self.eof and not self.err then
          events = bor(events, POLLIN)
        end
        local revents, err = wait_ready(self, events, deadline)
        if not revents then
          return nil, err
        end
        if band(revents, bor(POLLIN, POLLHUP, POLLERR)) ~= 0 and not self.eof
            and not self.err then
          local ok, rerr = read_some(self)
          if ok then
            pump(self)
          elseif rerr ~= "again" and rerr ~= "closed" then
            return nil, rerr
          end
        end
      end
    end
  end
  return true
end

-- Sends bytes as they are. Returns true or nil, err.
function Conn:send_raw(bytes, timeout)
  if type(bytes) ~= "string" then
    error("send_raw needs a string", 2)
  end
  return write_all(self, bytes, deadline_of(self, timeout))
end

-- The lowest id not in flight, as a web server that reuses id 1 on a kept connection does.
local function next_free_id(self)
  local collectors, results = self.collectors, self.results
  for id = 1, 65535 do
    if not collectors[id] and not results[id] then
      return id
    end
  end
  return nil
end

local function send_request(self, opts, deadline, level)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    error("request options must be a table", level + 1)
  end
  local id = opts.id
  if id == nil then
    id = next_free_id(self)
    if not id then
      return nil, "no free request id"
    end
  elseif self.collectors[id] or self.results[id] then
    error("request id " .. tostring(id) .. " is in flight", level + 1)
  end
  local o = {}
  for k, v in pairs(opts) do
    o[k] = v
  end
  o.id = id
  if o.keep_conn == nil then
    o.keep_conn = true
  end
  local ok, bytes = pcall(proto.request, o)
  if not ok then
    error(bytes, level + 1)
  end
  if self.err then
    return nil, self.err
  end
  self.collectors[id] = proto.response()
  local err
  ok, err = write_all(self, bytes, deadline)
  if not ok then
    -- An answer that came before the write failed stays for wait(id); nothing else can come.
    if not self.results[id] then
      self.collectors[id] = nil
    end
    return nil, err, id
  end
  return id
end

-- Waits for request id's END_REQUEST. Returns the result, or nil, err, partial result.
local function wait_for(self, id, deadline)
  while true do
    local c = self.results[id]
    if c then
      self.results[id] = nil
      return c:result()
    end
    c = self.collectors[id]
    if not c then
      return nil, "unknown request id"
    end
    if self.err then
      return nil, self.err, c:result()
    end
    local ok, err = fill(self, deadline)
    if not ok then
      if err ~= "timeout" then
        self.collectors[id] = nil
      end
      return nil, err, c:result()
    end
  end
end

-- Sends a request without waiting for the answer; returns its id (the next free one unless
-- opts.id is given), or nil, err and the id when the write failed (an answer that arrived
-- before the failure can still be had with wait(id)). opts are proto.request's plus timeout;
-- keep_conn defaults to true.
function Conn:send(opts)
  local timeout = type(opts) == "table" and opts.timeout or nil
  return send_request(self, opts, deadline_of(self, timeout), 2)
end

-- Reads until request id completes; records for other requests are kept for their own wait.
-- Returns the result (as proto.response():result()), or nil, err and the partial result.
function Conn:wait(id, timeout)
  if not self.collectors[id] and not self.results[id] then
    if self.eof or self.err or self.fd < 0 then
      -- Forgotten when the connection failed under it.
      return nil, self.err or "closed"
    end
    error("request id " .. tostring(id) .. " was not sent on this connection", 2)
  end
  return wait_for(self, id, deadline_of(self, timeout))
end

-- Sends one request and reads its answer. Returns the result, or nil, err and what was
-- collected. An answer that completed before a write failed (the peer answered early and
-- closed) is still returned.
function Conn:request(opts)
  local timeout = type(opts) == "table" and opts.timeout or nil
  local deadline = deadline_of(self, timeout)
  local id, err, failed = send_request(self, opts, deadline, 2)
  if id then
    return wait_for(self, id, deadline)
  end
  local c = failed and self.results[failed]
  if c then
    self.results[failed] = nil
    return c:result()
  end
  return nil, err
end

local function pop_queue(self)
  local head = self.qhead
  if head > self.qtail then
    return nil
  end
  local q = self.queue
  local rec = q[head]
  q[head] = nil
  if head == self.qtail then
    self.qhead, self.qtail = 1, 0
  else
    self.qhead = head + 1
  end
  return rec
end

-- Takes the first queued record of type rtype out of the queue, keeping the others in order.
local function take_queued(self, rtype)
  local q = self.queue
  local tail = self.qtail
  for i = self.qhead, tail do
    local rec = q[i]
    if rec.type == rtype and rec.id == 0 then
      for j = i, tail - 1 do
        q[j] = q[j + 1]
      end
      q[tail] = nil
      self.qtail = tail - 1
      if self.qhead > self.qtail then
        self.qhead, self.qtail = 1, 0
      end
      return rec
    end
  end
  return nil
end

-- The next record no request collector claimed, or nil, "closed" / "timeout" / "bad version".
function Conn:read_record(timeout)
  local deadline = deadline_of(self, timeout)
  while true do
    local rec = pop_queue(self)
    if rec then
      return rec
    end
    if self.err then
      return nil, self.err
    end
    local ok, err = fill(self, deadline)
    if not ok then
      return nil, err
    end
  end
end

-- Every record (not claimed by a request collector) until the peer closes. Returns the list
-- and "closed", or the list so far and "timeout" (or another error).
function Conn:read_until_closed(timeout)
  local deadline = deadline_of(self, timeout)
  local out = {}
  while true do
    local rec = pop_queue(self)
    if rec then
      out[#out + 1] = rec
    else
      if self.err then
        return out, self.err
      end
      local ok, err = fill(self, deadline)
      if not ok then
        return out, err
      end
    end
  end
end

-- Sends FCGI_GET_VALUES for names and returns the GET_VALUES_RESULT as a map, or nil, err.
-- Other records read meanwhile stay queued for read_record.
function Conn:get_values(names, timeout)
  local deadline = deadline_of(self, timeout)
  local ok, err = write_all(self, proto.get_values(names), deadline)
  if not ok then
    return nil, err
  end
  while true do
    local rec = take_queued(self, GET_VALUES_RESULT)
    if rec then
      return proto.decode_get_values_result(rec.content)
    end
    if self.err then
      return nil, self.err
    end
    ok, err = fill(self, deadline)
    if not ok then
      return nil, err
    end
  end
end

-- True when the peer has closed its side (what it sent before is still readable), plus
-- "reset" when it reset the connection; true as well after conn:close(). Reads what is already
-- there (a bounded amount) without waiting.
function Conn:closed()
  if self.fd < 0 then
    return true
  end
  for _ = 1, 1024 do
    if self.eof or not read_some(self) or not pump(self) then
      break
    end
  end
  if self.eof then
    return true, self.reset and "reset" or nil
  end
  return false
end

-- Bytes received that do not yet make a whole record.
function Conn:buffered()
  return self.parser:buffered()
end

-- Half-closes: the peer reads end-of-file, we can still read its answer.
function Conn:shutdown_write()
  if self.fd < 0 then
    return nil, "closed"
  end
  if C.mf_client_shutdown(self.fd, SHUT_WR) < 0 then
    return nil, "shutdown: " .. strerror(ffi_errno())
  end
  return true
end

function Conn:close()
  close_fd_box(self.box)
  self.fd = -1
  return true
end

return _M
