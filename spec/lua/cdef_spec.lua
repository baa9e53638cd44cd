-- The FFI declarations in the Lua modules must be exactly those of the C headers they
-- mirror: a mismatch would make LuaJIT call C with the wrong arguments, silently.
local core = require "moonfcgi.core"
local codec = require "moonfcgi.ngx.codec"
local shdict = require "moonfcgi.shdict"
local socket = require "moonfcgi.socket"

local function normalize(s)
    return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

local function cdef_part(path)
    local f = assert(io.open(path, "rb"))
    local header = f:read("*a")
    f:close()
    return header:match("/%* CDEF BEGIN %*/(.-)/%* CDEF END %*/")
end

for _, pair in ipairs({
    { "src/ffi.h", "lua/moonfcgi/core.lua", core.cdef },
    { "src/ngx.h", "lua/moonfcgi/ngx/codec.lua", codec.cdef },
    { "src/shdict.h", "lua/moonfcgi/shdict.lua", shdict.cdef },
    { "src/socket.h", "lua/moonfcgi/socket.lua", socket.cdef },
}) do
    local header, module, cdef = pair[1], pair[2], pair[3]
    describe("the FFI declarations of " .. module, function()
        it("are the CDEF part of " .. header .. ", word for word", function()
            local part = cdef_part(header)
            assert.is_string(part)
            assert.equal(normalize(part), normalize(cdef))
        end)

        it("resolve every function in the loaded core", function()
            for name in cdef:gmatch("(mf_ffi_[%w_]+)%(") do
                assert.is_not_nil(core.C[name], name)
            end
        end)
    end)
end
