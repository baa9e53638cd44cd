-- A WebSocket echo server (RFC 6455) for spec/ngx/resty_websocket_spec.lua, run as its own
-- process: nginx cannot echo, so the test brings its own. One connection at a time:
-- text and binary frames come back with their opcode, pings get a pong with the same
-- payload, a close is answered with the same status code and ends the connection.
--   luajit spec/ngx/ws_echo.lua PORT
-- (with moonfcgi's Lua modules on LUA_PATH and MOONFCGI_LIB set, for sha1 and base64).
-- Stops by itself after 120 s without a connection, or on SIGTERM.
local ffi = require "ffi"
local bit = require "bit"
local codec = require "moonfcgi.ngx.codec"

local port = assert(tonumber(arg[1]), "usage: ws_echo.lua PORT")
local band, bor, bxor, rshift = bit.band, bit.bor, bit.bxor, bit.rshift
local char, byte = string.char, string.byte

ffi.cdef [[
struct ws_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
struct ws_pollfd { int fd; short events; short revents; };
int socket(int domain, int type, int protocol);
int setsockopt(int fd, int level, int name, const void *val, unsigned len);
int bind(int fd, const void *addr, unsigned len);
int listen(int fd, int backlog);
int accept(int fd, void *addr, void *len);
long read(int fd, void *buf, size_t n);
long write(int fd, const void *buf, size_t n);
int close(int fd);
int poll(struct ws_pollfd *fds, unsigned long n, int timeout);
]]
local C = ffi.C

local lfd = C.socket(2, 1, 0)
assert(lfd >= 0, "socket")
C.setsockopt(lfd, 1, 2, ffi.new("int[1]", 1), 4) -- SO_REUSEADDR
local sa = ffi.new("struct ws_sockaddr_in")
sa.family = 2
sa.port = bit.rshift(bit.bswap(port), 16)
sa.addr = 0x0100007f
assert(C.bind(lfd, sa, ffi.sizeof(sa)) == 0, "bind")
assert(C.listen(lfd, 16) == 0, "listen")
io.stdout:write("listening ", port, "\n")
io.stdout:flush()

local pfd = ffi.new("struct ws_pollfd[1]")
local buf = ffi.new("char[65536]")

local function wait_readable(fd, ms)
    pfd[0].fd, pfd[0].events = fd, 1
    return C.poll(pfd, 1, ms) > 0
end

-- A buffered reader over one connection; nil once the peer is gone or silent for 10 s.
local function reader(fd)
    local pending = ""
    local function fill()
        if not wait_readable(fd, 10000) then
            return false
        end
        local n = C.read(fd, buf, 65536)
        if n <= 0 then
            return false
        end
        pending = pending .. ffi.string(buf, n)
        return true
    end
    return {
        take = function(n)
            while #pending < n do
                if not fill() then
                    return nil
                end
            end
            local s = pending:sub(1, n)
            pending = pending:sub(n + 1)
            return s
        end,
        until_blank = function()
            while not pending:find("\r\n\r\n", 1, true) do
                if not fill() then
                    return nil
                end
            end
            local head, rest = pending:match("^(.-\r\n\r\n)(.*)$")
            pending = rest
            return head
        end,
    }
end

local function send(fd, s)
    local off = 0
    while off < #s do
        local n = C.write(fd, ffi.cast("const char *", s) + off, #s - off)
        if n <= 0 then
            return false
        end
        off = off + n
    end
    return true
end

local function frame(opcode, payload)
    local len = #payload
    local head
    if len < 126 then
        head = char(bor(0x80, opcode), len)
    elseif len < 65536 then
        head = char(bor(0x80, opcode), 126, rshift(len, 8), band(len, 255))
    else
        head = char(bor(0x80, opcode), 127, 0, 0, 0, 0, band(rshift(len, 24), 255),
            band(rshift(len, 16), 255), band(rshift(len, 8), 255), band(len, 255))
    end
    return head .. payload
end

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

local function serve(fd)
    local r = reader(fd)
    local head = r.until_blank()
    if not head then
        return
    end
    local key = head:match("\r\n[Ss]ec%-[Ww]eb[Ss]ocket%-[Kk]ey:%s*([^\r]+)")
    if not key or not head:lower():find("\r\nupgrade:%s*websocket") then
        send(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    end
    local accept = codec.encode_base64(codec.sha1_bin(key .. GUID))
    local proto = head:match("\r\n[Ss]ec%-[Ww]eb[Ss]ocket%-[Pp]rotocol:%s*([^\r,]+)")
    send(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        .. "Sec-WebSocket-Accept: " .. accept .. "\r\n"
        .. (proto and ("Sec-WebSocket-Protocol: " .. proto .. "\r\n") or "") .. "\r\n")
    while true do
        local h = r.take(2)
        if not h then
            return
        end
        local b1, b2 = byte(h, 1, 2)
        local opcode = band(b1, 0x0f)
        local len = band(b2, 0x7f)
        if len == 126 then
            local e = r.take(2)
            len = byte(e, 1) * 256 + byte(e, 2)
        elseif len == 127 then
            local e = r.take(8)
            len = 0
            for i = 1, 8 do
                len = len * 256 + byte(e, i)
            end
        end
        local mask = band(b2, 0x80) ~= 0 and r.take(4) or nil
        local payload = len > 0 and r.take(len) or ""
        if not payload then
            return
        end
        if mask then
            local out = {}
            for i = 1, #payload do
                out[i] = char(bxor(byte(payload, i), byte(mask, (i - 1) % 4 + 1)))
            end
            payload = table.concat(out)
        end
        if opcode == 0x8 then
            send(fd, frame(0x8, payload:sub(1, 2)))
            return
        elseif opcode == 0x9 then
            send(fd, frame(0xa, payload))
        elseif opcode == 0x1 or opcode == 0x2 then
            send(fd, frame(opcode, payload))
        end
    end
end

while wait_readable(lfd, 120000) do
    local fd = C.accept(lfd, nil, nil)
    if fd >= 0 then
        serve(fd)
        C.close(fd)
    end
end
C.close(lfd)
