-- The dictionary operations that lua-resty-lock and lua-resty-limit-traffic are made of,
-- written as those libraries use them (they are not packaged by Debian).
local moonfcgi = require "moonfcgi"

local dict = moonfcgi.shared.locks

-- lua-resty-lock's lock(): add() with the lock's expiry; while another holder has it
-- ("exists"), sleep a step that grows by `ratio` up to `max_step`, until `timeout`.
-- Returns the seconds waited, or nil and the error.
local function lock(key, opts)
    local exptime, timeout = opts.exptime or 30, opts.timeout or 5
    local step, ratio, max_step = 0.001, 2, 0.5
    local ok, err = dict:add(key, true, exptime)
    if ok then
        return 0
    end
    if err ~= "exists" then
        return nil, err
    end
    local elapsed = 0
    while timeout > 0 do
        if step > timeout then
            step = timeout
        end
        moonfcgi.sleep(step)
        elapsed = elapsed + step
        timeout = timeout - step
        ok, err = dict:add(key, true, exptime)
        if ok then
            return elapsed
        end
        if err ~= "exists" then
            return nil, err
        end
        step = math.min(math.max(0.001, step * ratio), max_step)
    end
    return nil, "timeout"
end

-- lua-resty-lock's unlock() and expire().
local function unlock(key)
    return dict:delete(key)
end

local function expire(key, time)
    return dict:replace(key, true, time)
end

return function(req)
    local op, key = req:param("OP"), req:param("KEY") or "lock"
    local name = req:param("NAME") or "?"
    if op == "critical" then
        -- Holds the lock across a sleep; the order list shows who was inside when.
        local waited, err = lock(key, { timeout = tonumber(req:param("TIMEOUT")),
            exptime = tonumber(req:param("EXPTIME")) })
        if not waited then
            return req:write("failed: ", err)
        end
        dict:rpush("order", name .. " in")
        moonfcgi.sleep(tonumber(req:param("HOLD") or "0.05"))
        dict:rpush("order", name .. " out")
        if req:param("KEEP") ~= "1" then
            assert(unlock(key))
        end
        req:write(waited > 0 and "waited" or "at once")
    elseif op == "expire" then
        req:write(tostring(select(2, expire(key, 1))))
    end
end
