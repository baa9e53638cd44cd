-- The time functions of the ngx layer: ngx.now and ngx.time read the worker loop's cached
-- clock (moonfcgi.now), as OpenResty's read nginx's; the formatters are OpenResty's formats,
-- always in English and GMT whatever the locale.
local runtime = require "moonfcgi.runtime"
local core = require "moonfcgi.core"

local floor = math.floor
local format, lower = string.format, string.lower
local os_date = os.date
local tonumber, type, error = tonumber, type, error

local C = core.C

local _M = {}

local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
    "Dec" }
local MONTH_NUM = {}
for i, m in ipairs(MONTHS) do
    MONTH_NUM[lower(m)] = i
end

function _M.now()
    return runtime.now()
end

function _M.time()
    return floor(runtime.now())
end

function _M.update_time()
    local w = runtime.worker()
    if w then
        C.mf_ffi_worker_update_time(w)
    end
end

function _M.today()
    return os_date("%Y-%m-%d", _M.time())
end

function _M.localtime()
    return os_date("%Y-%m-%d %H:%M:%S", _M.time())
end

function _M.utctime()
    return os_date("!%Y-%m-%d %H:%M:%S", _M.time())
end

local function seconds(t, fname)
    t = tonumber(t)
    if not t then
        error("bad argument #1 to '" .. fname .. "' (number expected)", 3)
    end
    return floor(t)
end

-- "Thu, 18 Nov 2010 11:27:35 GMT"
function _M.http_time(t)
    local d = os_date("!*t", seconds(t, "http_time"))
    return format("%s, %02d %s %04d %02d:%02d:%02d GMT", DAYS[d.wday], d.day, MONTHS[d.month],
        d.year, d.hour, d.min, d.sec)
end

-- "Thu, 18-Nov-10 11:27:35 GMT": nginx keeps two-digit years up to 2037 for old browsers.
function _M.cookie_time(t)
    local d = os_date("!*t", seconds(t, "cookie_time"))
    local year = d.year > 2037 and format("%d", d.year) or format("%02d", d.year % 100)
    return format("%s, %02d-%s-%s %02d:%02d:%02d GMT", DAYS[d.wday], d.day, MONTHS[d.month],
        year, d.hour, d.min, d.sec)
end

-- Days from 1970-01-01 to a civil date (proleptic Gregorian), without the local time zone
-- that os.time would apply.
local function days_from_civil(y, m, d)
    if m <= 2 then
        y = y - 1
    end
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

local function epoch(day, mon, year, h, mi, s)
    day, year, h, mi, s = tonumber(day), tonumber(year), tonumber(h), tonumber(mi), tonumber(s)
    local m = MONTH_NUM[lower(mon)]
    if not m or day < 1 or day > 31 or h > 23 or mi > 59 or s > 59 then
        return nil
    end
    return days_from_civil(year, m, day) * 86400 + h * 3600 + mi * 60 + s
end

-- The three date formats of HTTP/1.1 (RFC 1123, RFC 850, asctime); nil for anything else.
function _M.parse_http_time(str)
    if type(str) ~= "string" then
        return nil
    end
    local day, mon, year, h, mi, s =
        str:match("^%a+, (%d%d?) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if day then
        return epoch(day, mon, year, h, mi, s)
    end
    day, mon, year, h, mi, s =
        str:match("^%a+, (%d%d?)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if day then
        year = tonumber(year)
        -- RFC 850's two-digit years: as nginx reads them, 70..99 are 19xx.
        return epoch(day, mon, year < 70 and 2000 + year or 1900 + year, h, mi, s)
    end
    mon, day, h, mi, s, year = str:match("^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
    if mon then
        return epoch(day, mon, year, h, mi, s)
    end
    return nil
end


return _M
