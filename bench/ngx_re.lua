-- ngx.re.gsub's cost per match as the subject grows: a linear implementation keeps the
-- time per match flat from 10^4 to 10^6 matches (a quadratic one grows it 100-fold).
-- Run from the source tree:
--   MOONFCGI_LIB=build/libmoonfcgi.so LUA_PATH="lua/?.lua;lua/?/init.lua;;" luajit bench/ngx_re.lua
local re = require "moonfcgi.ngx.re"

local clock = os.clock
local unit = "abcdefghi,"

local function measure(units, matches, regex, replace, opts)
    local subj = unit:rep(units)
    local best = math.huge
    for _ = 1, 3 do
        local t = clock()
        local _, n = re.gsub(subj, regex, replace, opts)
        t = clock() - t
        assert(n == matches)
        best = math.min(best, t)
    end
    return best
end

local cases = {
    { "template", ",", ";", "jo" },
    { "captures", "(?<c>,)", "[$1${c}]", "jo" },
    { "function", ",", function(m) return m[0] .. m[0] end, "jo" },
    { "empty matches", "x*", "-", "jo" },
}

print(("%-14s %12s %12s %12s %8s"):format("replace", "10^4 ns/m", "10^5 ns/m", "10^6 ns/m",
    "ratio"))
for _, c in ipairs(cases) do
    local per = {}
    for i, n in ipairs({ 1e4, 1e5, 1e6 }) do
        local units, matches = n, n
        if c[1] == "empty matches" then
            -- x* matches empty at every byte: n / 10 units give n + 1 matches.
            units, matches = n / #unit, n + 1
        end
        local t = measure(units, matches, c[2], c[3], c[4])
        per[i] = t / n * 1e9
    end
    print(("%-14s %12.0f %12.0f %12.0f %8.2f"):format(c[1], per[1], per[2], per[3],
        per[3] / per[1]))
end
