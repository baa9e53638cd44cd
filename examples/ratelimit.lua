-- A rate limiter shared by all workers: each client address may make RATE requests per
-- WINDOW seconds, however many workers serve it. The count lives in a shared dictionary
-- (docs/shared.md), so it holds across workers, reloads and worker replacements.
--
--   moonfcgi --shared ratelimit:1m examples/ratelimit.lua
--   RATELIMIT_RATE=100 RATELIMIT_WINDOW=60 moonfcgi --shared ratelimit:10m examples/ratelimit.lua
--
-- Two roles:
--   authorizer  in front of other content (lighttpd's mode = "authorizer", Apache's
--               mod_authnz_fcgi): 200 lets the request go on, 429 refuses it;
--   responder   answers itself: 200 "ok" or 429 "too many requests".
-- Both send X-RateLimit-Limit and X-RateLimit-Remaining, and Retry-After with a 429.
--
-- The window is fixed, as lua-resty-limit-traffic's resty.limit.count: the first request of a
-- client creates its counter at RATE with an expiry of WINDOW (incr's init and init_ttl), each
-- request takes one, and the counter vanishes when the window ends. When the dictionary is
-- full, the least recently seen clients' counters are evicted first (they start afresh).
local moonfcgi = require "moonfcgi"

local RATE = tonumber(os.getenv("RATELIMIT_RATE")) or 10
local WINDOW = tonumber(os.getenv("RATELIMIT_WINDOW")) or 1

local counters = moonfcgi.shared.ratelimit
if not counters then
    error("examples/ratelimit.lua needs a shared dictionary: start moonfcgi with "
        .. "--shared ratelimit:1m", 0)
end

-- Takes one request from the client's allowance. Returns the requests left (>= 0) or nil and
-- the seconds until the window ends.
local function take(addr)
    local left, err = counters:incr(addr, -1, RATE, WINDOW)
    if not left then
        -- The dictionary could not make room for a counter: let the request through rather
        -- than refuse every client.
        moonfcgi.log("error", "ratelimit: ", err)
        return RATE
    end
    if left < 0 then
        local ttl = counters:ttl(addr)
        return nil, math.max(1, math.ceil(ttl or WINDOW))
    end
    return left
end

local function limit(req)
    local addr = req:param("REMOTE_ADDR") or "unknown"
    local left, retry = take(addr)
    req:set_header("X-RateLimit-Limit", tostring(RATE))
    req:set_header("X-RateLimit-Remaining", tostring(left or 0))
    if not left then
        req:set_status(429, "Too Many Requests")
        req:set_header("Retry-After", tostring(retry))
        req:set_header("Content-Type", "text/plain")
        req:write("too many requests\n")
        return false
    end
    return true
end

return {
    authorize = function(req)
        if limit(req) then
            req:set_status(200)
        end
    end,
    respond = function(req)
        if limit(req) then
            req:set_header("Content-Type", "text/plain")
            req:write("ok\n")
        end
    end,
}
