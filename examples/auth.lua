-- An authorizer (the FastCGI authorizer role): the web server asks it whether a request may
-- go on before serving it. It accepts
--
--   Authorization: Bearer TOKEN           a token from TOKENS
--   Authorization: Basic BASE64(USER:PW)  a user from USERS (RFC 7617)
--
-- and answers 200 with Variable-USER and Variable-ROLE headers, which the web server passes
-- on to the next stage (lighttpd and Apache's mod_authnz_fcgi set them as environment
-- variables); 401 with a Basic challenge when the credentials are missing or wrong; 403 when
-- a known user without the "admin" role asks for a path under /admin.
--
--   moonfcgi --listen 127.0.0.1:9001 examples/auth.lua
--
-- The tables below stand in for a real user store: keep password hashes there, never
-- passwords, and compare them in constant time.
--
-- Apache's mod_authnz_fcgi sends no request body (no FCGI_STDIN at all), so an authorizer
-- must never read one: req:body() would wait for input that never comes.

local byte, char, sub, find, lower = string.byte, string.char, string.sub, string.find, string.lower
local floor = math.floor
local concat = table.concat

local USERS = {
    alice = { password = "wonderland", role = "admin" },
    bob = { password = "builder", role = "user" },
}

local TOKENS = {
    ["7f3c9a1e-alice"] = "alice",
    ["0b5d2e84-bob"] = "bob",
}

local REALM = 'Basic realm="moonfcgi"'

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_VALUE = {}
for i = 1, 64 do
    B64_VALUE[byte(B64, i)] = i - 1
end

-- Decodes base64 (RFC 4648 section 4; the "=" padding is optional). Returns nil when s holds
-- anything else.
local function base64_decode(s)
    s = s:gsub("==?$", "")
    if find(s, "[^%w%+/]") or #s % 4 == 1 then
        return nil
    end
    local out = {}
    for i = 1, #s, 4 do
        -- Up to four characters of 6 bits each make up to three bytes.
        local n, k = 0, 0
        for j = i, i + 3 do
            local v = B64_VALUE[byte(s, j)] or 0
            n = n * 64 + v
            if j <= #s then
                k = k + 1
            end
        end
        local b1, b2, b3 = floor(n / 65536), floor(n / 256) % 256, n % 256
        out[#out + 1] = sub(char(b1, b2, b3), 1, k - 1)
    end
    return concat(out)
end

-- The user the Authorization header names with valid credentials, or nil.
local function authenticate(header)
    local scheme, credentials = (header or ""):match("^%s*(%S+)%s+(%S+)%s*$")
    scheme = scheme and lower(scheme)
    if scheme == "bearer" then
        return TOKENS[credentials]
    elseif scheme == "basic" then
        local name, password = (base64_decode(credentials) or ""):match("^([^:]*):(.*)$")
        local user = USERS[name]
        if user and user.password == password then
            return name
        end
    end
    return nil
end

local function deny(req, status, message)
    req:set_status(status)
    if status == 401 then
        req:set_header("WWW-Authenticate", REALM)
    end
    req:set_header("Content-Type", "text/plain; charset=utf-8")
    req:write(message, "\n")
end

return {
    authorize = function(req)
        local name = authenticate(req:header("Authorization"))
        if not name then
            return deny(req, 401, "authentication required")
        end
        local role = USERS[name].role
        local path = (req.uri or ""):match("^[^?]*")
        if (path == "/admin" or path:sub(1, 7) == "/admin/") and role ~= "admin" then
            return deny(req, 403, "forbidden")
        end
        -- Only an explicit 200 grants: an authorizer that sets no status denies with 401.
        req:set_status(200)
        req:set_variable("USER", name)
        req:set_variable("ROLE", role)
    end,
}
