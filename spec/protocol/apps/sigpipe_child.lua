-- Run by known_failures_spec.lua as its own luajit process, with SIGPIPE at its default
-- action as in any program that embeds the core: a client closes its connection while the
-- handler is blocked writing. Exits 0 when the process survived it; a SIGPIPE kills it
-- (status 141).
local ffi = require "ffi"
pcall(ffi.cdef, "void *signal(int, void *);")
ffi.C.signal(13, ffi.cast("void *", 0)) -- SIG_DFL

local test = require "moonfcgi.test"
local app = test.load(arg[1] or "spec/protocol/apps/proto.lua", { timeout = 5 })
local S = _G.proto_state
local conn = app:connect()
conn:send{ params = { ACTION = "flood", SIZE = tostring(20 * 1024 * 1024), TAG = "f" } }
for _ = 1, 200 do
    app:run(0.01)
    if S.f and S.f.written and S.f.written > 0 then
        break
    end
end
app:run(0.1)
conn:close()
for _ = 1, 200 do
    app:run(0.01)
    if S.f and S.f.done then
        break
    end
end
io.stdout:write("survived ", tostring(S.f and S.f.write_err), "\n")
app:close()
os.exit(0)
