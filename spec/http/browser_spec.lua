-- A browser against moonfcgi --http: headless Chromium loads the REST example's front end
-- (examples/rest-ui, served by --http-root), runs its JavaScript, which calls the REST API on
-- the same host, and the spec reads the DOM the script produced (--dump-dom).
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local process = require "process"
local http = require "http_client"
local needs = require "needs"

local function chromium()
    for _, b in ipairs({ os.getenv("CHROMIUM_BIN") or "", "/usr/bin/chromium" }) do
        if b ~= "" and os.execute("test -x " .. http.quote(b)) == 0 then
            return b
        end
    end
end

describe("the REST example in a browser, through --http", function()
    it("shows the item its script added through the API", function()
        local bin = chromium()
        if not bin then
            pending(needs.missing("chromium not installed (apt-get install chromium)"))
            return
        end
        local srv = assert(process.moonfcgi("examples/rest.lua", { http = true,
            args = { "--workers", "1", "--http-root", "examples/rest-ui" } }))
        local profile = http.scratch("chromium-profile")
        finally(function()
            srv:cleanup()
            http.cleanup()
        end)
        -- --virtual-time-budget lets the page's fetches finish before the DOM is dumped.
        local cmd = string.format("env -u LD_PRELOAD timeout -s KILL 90 %s --headless --no-sandbox "
            .. "--disable-gpu --no-first-run --user-data-dir=%s --virtual-time-budget=10000 "
            .. "--dump-dom %s 2>/dev/null", http.quote(bin), http.quote(profile),
            http.quote("http://" .. srv.addr .. "/?add=desk%20lamp"))
        local p = io.popen(cmd)
        local dom = p:read("*a")
        p:close()
        assert.matches('<li data%-id="1">desk lamp</li>', dom)
        assert.matches('<p id="status">1 items</p>', dom)
        -- The API saw it too: the item is in the store.
        assert.matches('"name":"desk lamp"', http.get("http://" .. srv.addr .. "/items").body)
    end)
end)
