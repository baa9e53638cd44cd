-- What a spec needs from the machine: a server, a tool, root. On a developer's machine a
-- missing need makes the spec pending (`pending(needs.missing(why))`); in CI (CI=true) or
-- with MOONFCGI_REQUIRE_ALL=1 every spec must run, so a missing need is an error that fails
-- the spec and says what to install. spec/run-all.sh also fails a strict run that has any
-- pending spec, whoever made it pending.
local os_getenv = os.getenv

local _M = {}

local function set(name)
    local v = os_getenv(name)
    return v ~= nil and v ~= "" and v ~= "0" and v ~= "false"
end

-- True when no spec may be skipped.
function _M.strict()
    return set("CI") or set("MOONFCGI_REQUIRE_ALL")
end

-- Returns why, for pending(); raises it (at the caller's level) in a strict run.
function _M.missing(why)
    if _M.strict() then
        error(why .. " (CI or MOONFCGI_REQUIRE_ALL is set: every spec must run)", 2)
    end
    return why
end

return _M
