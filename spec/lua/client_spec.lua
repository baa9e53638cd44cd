-- moonfcgi.client against a tiny FastCGI application written here, in Lua: the application
-- side is another client connection (client.wrap_fd on the far end of a socketpair, or an
-- accepted socket) driven step by step with send_raw and read_record. Where the client must
-- write and read at once (a 1 MiB stdin echoed back), the application runs in a forked child.
-- Only loopback and unix sockets; every wait has a timeout and every loop a bound.

local ffi = require "ffi"
local bit = require "bit"
local proto = require "moonfcgi.proto"
local client = require "moonfcgi.client"

local rep = string.rep

local cdefs = {
  "struct mf_spec_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4];"
    .. " uint8_t zero[8]; };",
  "struct mf_spec_sockaddr_in6 { uint16_t family; uint16_t port; uint32_t flowinfo;"
    .. " uint8_t addr[16]; uint32_t scope_id; };",
  "struct mf_spec_sockaddr_un { uint16_t family; char path[108]; };",
  "int mf_spec_socket(int, int, int) __asm__(\"socket\");",
  "int mf_spec_bind(int, const void *, uint32_t) __asm__(\"bind\");",
  "int mf_spec_listen(int, int) __asm__(\"listen\");",
  "int mf_spec_accept4(int, void *, void *, int) __asm__(\"accept4\");",
  "int mf_spec_getsockname(int, void *, uint32_t *) __asm__(\"getsockname\");",
  "int mf_spec_inet_pton(int, const char *, void *) __asm__(\"inet_pton\");",
  "int mf_spec_close(int) __asm__(\"close\");",
  "int mf_spec_unlink(const char *) __asm__(\"unlink\");",
  "int mf_spec_poll(void *, unsigned long, int) __asm__(\"poll\");",
  "int mf_spec_fork(void) __asm__(\"fork\");",
  "void mf_spec_exit(int) __asm__(\"_exit\");",
  "int mf_spec_waitpid(int, int *, int) __asm__(\"waitpid\");",
  "int mf_spec_kill(int, int) __asm__(\"kill\");",
  "int mf_spec_getpid(void) __asm__(\"getpid\");",
}
for _, def in ipairs(cdefs) do
  local ok, err = pcall(ffi.cdef, def)
  assert(ok or tostring(err):find("redefine", 1, true), err)
end
local C = ffi.C

local AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
local SOCK_STREAM, SOCK_CLOEXEC = 1, 524288
local WNOHANG, SIGKILL = 1, 9

local function sleep(seconds)
  C.mf_spec_poll(nil, 0, seconds * 1000)
end

local function ntohs(n)
  return bit.bor(bit.rshift(n, 8), bit.band(bit.lshift(n, 8), 0xff00))
end

-- A listening socket on a loopback address and an ephemeral port, or a unix path.
-- Returns fd, port (nil for unix), or nil when the family is unavailable here.
local function listen_on(family, where)
  local fd = C.mf_spec_socket(family, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
  if fd < 0 then
    return nil
  end
  local sa
  if family == AF_INET then
    sa = ffi.new("struct mf_spec_sockaddr_in")
    assert(C.mf_spec_inet_pton(AF_INET, where, sa.addr) == 1)
  elseif family == AF_INET6 then
    sa = ffi.new("struct mf_spec_sockaddr_in6")
    assert(C.mf_spec_inet_pton(AF_INET6, where, sa.addr) == 1)
  else
    sa = ffi.new("struct mf_spec_sockaddr_un")
    ffi.copy(sa.path, where)
  end
  sa.family = family
  if C.mf_spec_bind(fd, sa, ffi.sizeof(sa)) < 0 or C.mf_spec_listen(fd, 16) < 0 then
    C.mf_spec_close(fd)
    return nil
  end
  if family == AF_UNIX then
    return fd
  end
  local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
  assert(C.mf_spec_getsockname(fd, sa, len) == 0)
  return fd, ntohs(sa.port)
end

-- Accepts one connection, waiting at most 5 s for it.
local function accept(lfd)
  local pfd = ffi.new("struct mf_client_pollfd[1]")
  pfd[0].fd = lfd
  pfd[0].events = 1
  assert(C.mf_spec_poll(pfd, 1, 5000) == 1, "nothing to accept")
  local fd = C.mf_spec_accept4(lfd, nil, nil, SOCK_CLOEXEC)
  assert(fd >= 0, "accept failed")
  return fd
end

-- Runs fn in a child process. Returns join(), which waits at most 10 s for the child and
-- returns true when fn returned without error.
local function spawn(fn)
  io.stdout:flush()
  io.stderr:flush()
  local pid = C.mf_spec_fork()
  assert(pid >= 0, "fork failed")
  if pid == 0 then
    local ok, err = pcall(fn)
    if not ok then
      io.stderr:write("spec server: ", tostring(err), "\n")
      io.stderr:flush()
    end
    C.mf_spec_exit(ok and 0 or 1)
  end
  return function()
    local status = ffi.new("int[1]")
    for _ = 1, 1000 do
      local r = C.mf_spec_waitpid(pid, status, WNOHANG)
      if r == pid then
        return bit.band(status[0], 0x7f) == 0 and bit.band(bit.rshift(status[0], 8), 0xff) == 0
      end
      sleep(0.01)
    end
    C.mf_spec_kill(pid, SIGKILL)
    C.mf_spec_waitpid(pid, status, 0)
    return false
  end
end

-- The application side: reads what the web server side sends, answers when told to.
local App = {}
App.__index = App

local function app_on(fd)
  return setmetatable({ conn = assert(client.wrap_fd(fd, { timeout = 5 })), reqs = {} }, App)
end

-- Reads records until one request's input is complete (PARAMS and STDIN ended; PARAMS only
-- when no_stdin), and returns it as { id, role, keep_conn, params (map), stdin }.
-- on_stdin(req, chunk) sees each STDIN record as it arrives.
function App:read_request(on_stdin, no_stdin)
  for _ = 1, 100000 do
    local rec, err = self.conn:read_record()
    if not rec then
      return nil, err
    end
    local req = self.reqs[rec.id]
    if rec.type == proto.BEGIN_REQUEST then
      local role, _, keep = proto.decode_begin_request(rec.content)
      req = { id = rec.id, role = role, keep_conn = keep, params_parts = {}, stdin_parts = {} }
      self.reqs[rec.id] = req
    elseif rec.type == proto.PARAMS then
      if rec.content ~= "" then
        table.insert(req.params_parts, rec.content)
      else
        req.params = {}
        for _, p in ipairs(assert(proto.decode_params(table.concat(req.params_parts)))) do
          req.params[p[1]] = p[2]
        end
        if no_stdin then
          self.reqs[rec.id] = nil
          return req
        end
      end
    elseif rec.type == proto.STDIN then
      if rec.content ~= "" then
        table.insert(req.stdin_parts, rec.content)
        if on_stdin then
          on_stdin(req, rec.content)
        end
      else
        req.stdin = table.concat(req.stdin_parts)
        self.reqs[rec.id] = nil
        return req
      end
    end
  end
  error("no request in 100000 records")
end

-- The bytes of a whole answer: STDOUT (CGI headers, blank line, body), STDERR, END_REQUEST.
local function answer(id, res)
  local head = {}
  if res.status then
    head[#head + 1] = "Status: " .. res.status .. "\r\n"
  end
  for _, h in ipairs(res.headers or {}) do
    head[#head + 1] = h[1] .. ": " .. h[2] .. "\r\n"
  end
  local out = table.concat(head) .. "\r\n" .. (res.body or "")
  return proto.stream(proto.STDOUT, id, out, res.chunk)
      .. (res.stderr and proto.stream(proto.STDERR, id, res.stderr) or "")
      .. proto.end_request(id, res.app_status or 0, res.protocol_status or 0)
end

function App:send(bytes)
  assert(self.conn:send_raw(bytes))
end

function App:close()
  self.conn:close()
end

local function pair()
  local a, b = client.socketpair()
  assert(a, b)
  return a, b
end

describe("client over a socketpair", function()
  local c, app

  before_each(function()
    local a, b = pair()
    c = assert(client.wrap_fd(a, { timeout = 5 }))
    app = app_on(b)
  end)

  after_each(function()
    c:close()
    app:close()
  end)

  it("sends a request and collects its answer", function()
    local id = c:send({ params = { REQUEST_METHOD = "POST", REQUEST_URI = "/items" },
                        stdin = "name=x" })
    assert.equal(1, id)

    local req = app:read_request()
    assert.equal(1, req.id)
    assert.equal(proto.RESPONDER, req.role)
    assert.is_true(req.keep_conn)
    assert.same({ REQUEST_METHOD = "POST", REQUEST_URI = "/items" }, req.params)
    assert.equal("name=x", req.stdin)
    app:send(answer(1, { status = "201 Created", headers = { { "Location", "/items/1" } },
                         body = "made", stderr = "note" }))

    local res = assert(c:wait(id))
    assert.equal(201, res.status)
    assert.equal("/items/1", res.headers.location)
    assert.equal("made", res.body)
    assert.equal("note", res.stderr)
    assert.equal(0, res.app_status)
    assert.equal("complete", res.protocol_status)
    assert.equal("Status: 201 Created\r\nLocation: /items/1\r\n\r\nmade", res.stdout)
  end)

  it("reuses id 1 once the previous request is done, as nginx does", function()
    for _ = 1, 3 do
      local id = c:send({ params = { A = "1" } })
      assert.equal(1, id)
      app:read_request()
      app:send(answer(1, { body = "ok" }))
      assert.equal("ok", assert(c:wait(id)).body)
    end
  end)

  it("passes role, keep_conn = false, and no STDIN for an Apache-style authorizer", function()
    c:send({ role = "authorizer", keep_conn = false, params = { REMOTE_USER = "u" },
             stdin = false })
    local req = app:read_request(nil, true)
    assert.equal(proto.AUTHORIZER, req.role)
    assert.is_false(req.keep_conn)
    app:send(answer(1, { status = 401 }))
    assert.equal(401, assert(c:wait(1)).status)
  end)

  it("multiplexes: answers arriving out of order reach their own requests", function()
    local ids = {}
    for i = 1, 3 do
      ids[i] = c:send({ params = { N = tostring(i) }, stdin = "in" .. i })
    end
    assert.same({ 1, 2, 3 }, ids)
    for i = 1, 3 do
      local req = app:read_request()
      assert.equal(i, req.id)
      assert.equal("in" .. i, req.stdin)
    end
    -- Interleaved: 3 finishes first, then 2, then 1.
    app:send(table.concat({
      proto.record(proto.STDOUT, 3, "X-N: 3\r\n\r\nthree"),
      proto.record(proto.STDOUT, 1, "X-N: 1\r\n\r\none"),
      proto.record(proto.STDERR, 2, "err2"),
      proto.record(proto.STDOUT, 3, ""),
      proto.end_request(3, 33, 0),
      proto.record(proto.STDOUT, 2, "Status: 500\r\n\r\ntwo"),
      proto.record(proto.STDOUT, 2, ""),
      proto.end_request(2, 22, 0),
      proto.record(proto.STDOUT, 1, ""),
      proto.end_request(1, 11, 0),
    }))

    local r2 = assert(c:wait(2))
    assert.same({ 500, "two", "err2", 22, 4 }, { r2.status, r2.body, r2.stderr, r2.app_status,
                                                 r2.records })
    -- While a new request goes out, 1 and 3 are still waiting to be collected.
    local id4 = c:send({ params = { N = "4" } })
    assert.equal(2, id4)
    local r1 = assert(c:wait(1))
    assert.same({ 200, "1", "one", 11 }, { r1.status, r1.headers["x-n"], r1.body,
                                           r1.app_status })
    local r3 = assert(c:wait(3))
    assert.same({ "three", 33, 3 }, { r3.body, r3.app_status, r3.records })
    assert.same({ nil, "timeout" }, { c:read_record(0.05) })
  end)

  it("returns nil, \"timeout\" when the application says nothing", function()
    c:close()
    local a, b = pair()
    c = assert(client.wrap_fd(a, { timeout = 0.2 }))
    app:close()
    app = app_on(b)
    local t0 = client.now()
    local res, err = c:request({ params = { A = "1" } })
    local took = client.now() - t0
    assert.is_nil(res)
    assert.equal("timeout", err)
    assert.is_true(took >= 0.19, "took " .. took)
    -- The request is still in flight: a late answer can be waited for.
    assert.equal(1, app:read_request().id)
    app:send(answer(1, { body = "late" }))
    assert.equal("late", assert(c:wait(1)).body)
  end)

  it("takes a per-call timeout for read_record", function()
    local t0 = client.now()
    assert.same({ nil, "timeout" }, { c:read_record(0.2) })
    assert.is_true(client.now() - t0 >= 0.19)
  end)

  it("returns nil, \"closed\" when the application closes mid-request", function()
    local id = c:send({ params = { A = "1" } })
    app:read_request()
    app:send(proto.record(proto.STDOUT, id, "Status: 200\r\n\r\npart"))
    app:close()
    local res, err, partial = c:wait(id)
    assert.is_nil(res)
    assert.equal("closed", err)
    assert.equal("part", partial.body)
    assert.is_true(c:closed())
    assert.same({ nil, "closed" }, { c:wait(id) })
  end)

  it("returns nil, \"closed\" when the application closed before the request", function()
    app:close()
    assert.same({ nil, "closed" }, { c:request({ params = { A = "1" } }) })
  end)

  it("still returns an answer the application sent before closing early", function()
    app:send(answer(1, { status = 413, body = "too big" }))
    app:close()
    local res = assert(c:request({ stdin = rep("x", 1024 * 1024) }))
    assert.equal(413, res.status)
    assert.equal("too big", res.body)
  end)

  it("reads raw records until the peer closes", function()
    app:send(proto.record(proto.UNKNOWN_TYPE, 0, "\42" .. rep("\0", 7))
             .. proto.record(proto.STDOUT, 9, "x"))
    app:close()
    local recs, why = c:read_until_closed()
    assert.equal("closed", why)
    assert.equal(2, #recs)
    assert.same({ proto.UNKNOWN_TYPE, 0, 42 }, { recs[1].type, recs[1].id,
                                                 recs[1].content:byte(1) })
    assert.same({ proto.STDOUT, 9, "x" }, { recs[2].type, recs[2].id, recs[2].content })
    assert.same({ nil, "closed" }, { c:read_record() })
  end)

  it("gives up read_until_closed after its timeout", function()
    app:send(proto.record(proto.STDOUT, 9, "x"))
    local recs, why = c:read_until_closed(0.2)
    assert.equal("timeout", why)
    assert.equal(1, #recs)
    assert.is_false(c:closed())
  end)

  it("asks GET_VALUES and leaves other records queued", function()
    assert.is_true(c:send_raw(proto.record(12, 0, "")))
    -- The application answers the unknown type, then (ahead of time) the query.
    local rec = assert(app.conn:read_record())
    assert.equal(12, rec.type)
    app:send(proto.record(proto.UNKNOWN_TYPE, 0, "\12" .. rep("\0", 7))
             .. proto.get_values_result({ FCGI_MPXS_CONNS = "1", FCGI_MAX_REQS = "50" }))
    local values = assert(c:get_values({ "FCGI_MPXS_CONNS", "FCGI_MAX_REQS" }))
    assert.same({ FCGI_MPXS_CONNS = "1", FCGI_MAX_REQS = "50" }, values)
    rec = assert(app.conn:read_record())
    assert.equal(proto.GET_VALUES, rec.type)
    assert.same({ { "FCGI_MPXS_CONNS", "" }, { "FCGI_MAX_REQS", "" } },
                proto.decode_params(rec.content))
    assert.equal(proto.UNKNOWN_TYPE, assert(c:read_record()).type)
  end)

  it("half-closes with shutdown_write and still reads the answer", function()
    c:send({ params = { A = "1" } })
    assert.is_true(c:shutdown_write())
    assert.equal(1, app:read_request().id)
    assert.same({ nil, "closed" }, { app.conn:read_record() })
    app:send(answer(1, { body = "after eof" }))
    assert.equal("after eof", assert(c:wait(1)).body)
  end)

  it("reports a bad version and does not resynchronise", function()
    c:send({})
    app:send(proto.record(proto.STDOUT, 1, "ok") .. "\2\6\0\1\0\0\0\0")
    local res, err = c:wait(1)
    assert.is_nil(res)
    assert.equal("bad version", err)
    assert.same({ nil, "bad version" }, { c:read_record() })
  end)

  it("rejects misuse with errors", function()
    assert.has_error(function() c:wait(7) end)
    c:send({ id = 5 })
    assert.has_error(function() c:send({ id = 5 }) end)
    assert.has_error(function() c:send({ role = "nope" }) end)
    assert.has_error(function() c:send_raw(42) end)
  end)
end)

describe("client against an application in another process", function()
  -- An echo application: STDOUT repeats each STDIN record as it arrives, so the answer flows
  -- back while the client is still writing.
  local function echo_app(fd, requests, delay)
    return function()
      local app = app_on(fd)
      -- Reading late makes the client fill the socket buffers and wait.
      sleep(delay or 0)
      for _ = 1, requests do
        local req = assert(app:read_request(function(r, chunk)
          if not r.started then
            r.started = true
            app:send(proto.record(proto.STDOUT, r.id, "Content-Type: application/x-echo\r\n\r\n"))
          end
          app:send(proto.record(proto.STDOUT, r.id, chunk))
        end))
        app:send(proto.record(proto.STDOUT, req.id, "") .. proto.end_request(req.id, #req.stdin))
      end
      app:close()
    end
  end

  it("writes a 1 MiB stdin in partial writes while reading the echo", function()
    local a, b = pair()
    local join = spawn(echo_app(b, 1, 0.1))
    C.mf_spec_close(b)
    local c = assert(client.wrap_fd(a, { timeout = 10 }))
    local body = {}
    for i = 1, 1024 do
      body[i] = rep(string.char(i % 256), 1024)
    end
    body = table.concat(body)
    local res = assert(c:request({ params = { CONTENT_LENGTH = #body }, stdin = body }))
    assert.equal(200, res.status)
    assert.equal("application/x-echo", res.headers["content-type"])
    assert.equal(#body, #res.body)
    assert.is_true(res.body == body)
    assert.equal(#body, res.app_status)
    assert.is_true(c.stats.partial_writes > 0)
    assert.is_true(c.stats.write_waits > 0)
    assert.is_true(c.stats.sent > #body)
    c:close()
    assert.is_true(join())
  end)

  it("multiplexes three 1 MiB requests without deadlock", function()
    local a, b = pair()
    local join = spawn(echo_app(b, 3))
    C.mf_spec_close(b)
    local c = assert(client.wrap_fd(a, { timeout = 10 }))
    local bodies, ids = {}, {}
    for i = 1, 3 do
      bodies[i] = rep(string.char(64 + i), 1024 * 1024)
      ids[i] = assert(c:send({ params = { N = i }, stdin = bodies[i], stdin_chunk = 32768 }))
    end
    assert.same({ 1, 2, 3 }, ids)
    for _, i in ipairs({ 3, 1, 2 }) do
      local res = assert(c:wait(ids[i]))
      assert.is_true(res.body == bodies[i])
      -- The header record, 32 echoed chunks, the empty STDOUT and END_REQUEST.
      assert.equal(1 + 32 + 1 + 1, res.records)
    end
    c:close()
    assert.is_true(join())
  end)

  it("answers many requests in turn on one kept connection", function()
    local a, b = pair()
    local join = spawn(echo_app(b, 200))
    C.mf_spec_close(b)
    local c = assert(client.wrap_fd(a, { timeout = 10 }))
    for i = 1, 200 do
      local res = assert(c:request({ params = { I = i }, stdin = "n" .. i }))
      assert.equal("n" .. i, res.body)
    end
    c:close()
    assert.is_true(join())
  end)
end)

describe("client.connect", function()
  local function round_trip(c, lfd)
    local app = app_on(accept(lfd))
    local id = c:send({ params = { A = "1" } })
    assert.same({ A = "1" }, app:read_request().params)
    app:send(answer(id, { body = "hi" }))
    assert.equal("hi", assert(c:wait(id)).body)
    app:close()
    c:close()
  end

  it("connects to 127.0.0.1:port", function()
    local lfd, port = listen_on(AF_INET, "127.0.0.1")
    local c = assert(client.connect("127.0.0.1:" .. port, { timeout = 5 }))
    assert.is_number(c.fd)
    round_trip(c, lfd)
    C.mf_spec_close(lfd)
  end)

  it("resolves localhost:port", function()
    local lfd, port = listen_on(AF_INET, "127.0.0.1")
    local c = assert(client.connect("localhost:" .. port, { timeout = 5 }))
    round_trip(c, lfd)
    C.mf_spec_close(lfd)
  end)

  it("connects to [::1]:port where IPv6 loopback exists", function()
    local lfd, port = listen_on(AF_INET6, "::1")
    if not lfd then
      return -- no IPv6 in this sandbox
    end
    local c = assert(client.connect("[::1]:" .. port, { timeout = 5 }))
    round_trip(c, lfd)
    C.mf_spec_close(lfd)
  end)

  it("connects to unix:/path", function()
    local base = os.tmpname()
    local path = base .. ".sock"
    local lfd = assert(listen_on(AF_UNIX, path))
    local c = assert(client.connect("unix:" .. path, { timeout = 5 }))
    round_trip(c, lfd)
    C.mf_spec_close(lfd)
    C.mf_spec_unlink(path)
    os.remove(base)
  end)

  it("wraps an fd number", function()
    local a, b = pair()
    local c = assert(client.connect(a))
    assert.equal(a, c.fd)
    c:close()
    C.mf_spec_close(b)
  end)

  it("returns nil, err for a refused connection or a bad address", function()
    local lfd, port = listen_on(AF_INET, "127.0.0.1")
    C.mf_spec_close(lfd)
    local c, err = client.connect("127.0.0.1:" .. port, { timeout = 5 })
    assert.is_nil(c)
    assert.matches("connect", err)
    c, err = client.connect("127.0.0.1", { timeout = 5 })
    assert.is_nil(c)
    assert.matches("invalid address", err)
    c, err = client.connect("unix:/nonexistent/dir/sock", { timeout = 5 })
    assert.is_nil(c)
    assert.is_string(err)
  end)
end)
