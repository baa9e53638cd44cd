-- Debian's packaged OpenResty libraries for the spec/ngx specs, unmodified: fetched and
-- unpacked by spec/support/upstreams.lua (never installed), put first on package.path, and
-- each module checked byte for byte against its package before a spec uses it.
if package.path:sub(1, 19) ~= "spec/support/?.lua;" then
    package.path = "spec/support/?.lua;" .. package.path
end
local upstreams = require "upstreams"

local _M = { upstreams = upstreams }

-- Requires the modules named (Debian's names: nginx.redis, resty.lrucache, ...) from the
-- unpacked packages and returns them in order; raises unless every file is the package's.
function _M.require(...)
    require "moonfcgi.ngx"
    local debs = assert(upstreams.fetch_debs())
    if package.path:sub(1, #debs.path) ~= debs.path then
        package.path = debs.path .. package.path
    end
    local mods = {}
    for i, name in ipairs({ ... }) do
        local path, pkg = upstreams.check_module(name)
        assert(path, pkg)
        assert(path:sub(1, #debs.lua_dir) == debs.lua_dir, name .. " loads from " .. path)
        mods[i] = require(name)
    end
    -- The modules those required in turn come from the packages too.
    for name in pairs(package.loaded) do
        local path = package.searchpath(name, debs.path)
        if path then
            assert(upstreams.deb_file_check(path))
        end
    end
    return unpack(mods)
end

return _M
