-- A dictionary (--shared store:SIZE) under two kinds of load from several workers: a race of
-- increments, and a tight loop of writes that the spec kills with SIGKILL at random points.
local moonfcgi = require "moonfcgi"
local shdict = require "moonfcgi.shdict"

local d = moonfcgi.shared.store

-- Values say which key they belong to and how long their padding is, so a torn or misplaced
-- value shows when read back.
local function value_for(key, n)
    return key .. "|" .. n .. "|" .. ("x"):rep(n % 3000)
end

local function valid(key, v)
    local k, n, pad = v:match("^([^|]+)|(%d+)|(x*)$")
    return k == key and #pad == tonumber(n) % 3000
end

-- Made once, so that the loop spends its time in the dictionary (where a kill holds the
-- lock), not in building strings.
local KEYS, VALUES = {}, {}
for k = 0, 299 do
    KEYS[k] = "k" .. k
    VALUES[k] = {}
    for v = 0, 7 do
        VALUES[k][v] = value_for(KEYS[k], k * 8 + v * 397)
    end
end
local LISTS, ITEMS, COUNTERS, LOCKS = {}, {}, {}, {}
for l = 0, 19 do
    LISTS[l] = "l" .. l
    ITEMS[l] = LISTS[l] .. "|item"
end
for c = 0, 49 do
    COUNTERS[c] = "c" .. c
end
for c = 0, 9 do
    LOCKS[c] = "lock" .. c
end

-- Writes until the spec kills the worker; bounded by CPU time so it ends by itself.
local function write_loop()
    local i = 0
    local stop = os.clock() + 20
    while i % 4096 ~= 0 or os.clock() < stop do
        i = i + 1
        local r = (i * 7919) % 1000
        local key = KEYS[i % 300]
        if r < 500 then
            d:set(key, VALUES[i % 300][i % 8])
        elseif r < 600 then
            d:delete(key)
        elseif r < 750 then
            d:incr(COUNTERS[i % 50], 1, 0)
        elseif r < 850 then
            d:rpush(LISTS[i % 20], ITEMS[i % 20])
        elseif r < 950 then
            d:lpop(LISTS[i % 20])
        else
            d:add(LOCKS[i % 10], true, 0.01)
        end
    end
end

-- Reads every key back; returns "ok ..." or what is wrong.
local function verify()
    local fig, err = shdict.check(d)
    if not fig then
        return "inconsistent: " .. err
    end
    local keys = d:get_keys(0)
    for _, key in ipairs(keys) do
        local kind = key:sub(1, 1)
        if kind == "k" then
            local v = d:get(key)
            if type(v) ~= "string" or not valid(key, v) then
                return "bad value for " .. key .. ": " .. tostring(v)
            end
        elseif kind == "c" then
            if type(d:get(key)) ~= "number" then
                return "bad counter " .. key
            end
        elseif kind == "l" and key:sub(1, 4) ~= "lock" then
            local n = d:llen(key)
            for _ = 1, n do
                local item = d:lpop(key)
                if type(item) ~= "string" or item:sub(1, #key + 1) ~= key .. "|" then
                    return "bad list item in " .. key .. ": " .. tostring(item)
                end
            end
            if d:llen(key) ~= 0 then
                return "list " .. key .. " did not empty"
            end
        end
    end
    fig = assert(shdict.check(d))
    -- Everything written fits without evictions: each value is still readable, and writes go on.
    assert(d:set("after", "fine"))
    return string.format("ok keys %d recoveries %d", #keys, fig.recoveries)
end

return function(req)
    local op = req:param("OP")
    if op == "race" then
        -- Each worker takes part once; the two wait for each other so their loops overlap.
        if not d:add("joined:" .. moonfcgi.worker, true) then
            return req:write("again")
        end
        d:incr("joined", 1, 0)
        for _ = 1, 1000 do
            if d:get("joined") >= 2 then
                break
            end
            moonfcgi.sleep(0.01)
        end
        for _ = 1, tonumber(req:param("N")) do
            d:incr("n", 1, 0)
        end
        req:write("done")
    elseif op == "incr" then
        req:write(tostring(d:incr("n", tonumber(req:param("N")), 0)))
    elseif op == "get" then
        req:write(tostring(d:get(req:param("KEY"))))
    elseif op == "write_loop" then
        write_loop()
        req:write("looped")
    elseif op == "verify" then
        req:write(verify())
    end
end
