-- The FFI declarations in lua/moonfcgi/core.lua must be exactly those of src/ffi.h: a
-- mismatch would make LuaJIT call C with the wrong arguments, silently.
local core = require "moonfcgi.core"

local function normalize(s)
    return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

describe("the FFI declarations", function()
    it("are the CDEF part of src/ffi.h, word for word", function()
        local f = assert(io.open("src/ffi.h", "rb"))
        local header = f:read("*a")
        f:close()
        local part = header:match("/%* CDEF BEGIN %*/(.-)/%* CDEF END %*/")
        assert.is_string(part)
        assert.equal(normalize(part), normalize(core.cdef))
    end)

    it("resolve every function in the loaded core", function()
        for name in core.cdef:gmatch("(mf_ffi_[%w_]+)%(") do
            assert.is_not_nil(core.C[name], name)
        end
    end)
end)
