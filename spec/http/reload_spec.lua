-- --watch under --http load: keep-alive clients ask all the time while the app is saved again
-- and again; every request must succeed, and the answers must move to the new versions.
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local process = require "process"
local http = require "http_client"
local client = require "moonfcgi.client"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local function sleep(s)
    ffi.C.poll(nil, 0, s * 1000)
end

-- Saves version n of the app the way an editor does: a new file renamed over the old one.
local function save(dir, n)
    http.write_file(dir .. "/app.tmp", string.format([[
return function(req)
    req:set_header("Content-Type", "text/plain")
    req:write("version %d")
end
]], n))
    assert(os.rename(dir .. "/app.tmp", dir .. "/app.lua"))
end

describe("--watch under --http load", function()
    it("reloads five times with no failed request", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir) == 0)
        save(dir, 1)
        local srv = assert(process.moonfcgi(dir .. "/app.lua", { http = true,
            args = { "--workers", "2", "--watch" } }))
        local stop = dir .. "/stop"
        finally(function()
            http.write_file(stop, "")
            srv:cleanup()
            os.execute("rm -rf " .. dir)
            http.cleanup()
        end)
        local port = srv.addr:match(":(%d+)$")
        local load = io.popen(string.format("env -u LD_PRELOAD timeout -s KILL 150 python3 "
            .. "spec/http/load.py %s %s 4 2>&1", port, http.quote(stop)))
        for n = 2, 6 do
            -- --watch checks the files a few times a second; wait for the new version to serve.
            sleep(0.3)
            save(dir, n)
            local deadline = client.now() + 20
            repeat
                sleep(0.1)
                local body = http.get("http://" .. srv.addr .. "/").body
            until body == "version " .. n or client.now() > deadline
            assert.equal("version " .. n, http.get("http://" .. srv.addr .. "/").body)
        end
        http.write_file(stop, "")
        local out = load:read("*a")
        load:close()
        local requests, failed = out:match("requests (%d+) failed (%d+)")
        assert.is_truthy(requests, out)
        assert.equal("0", failed, out)
        assert.is_true(tonumber(requests) > 50, out)
        -- The clients saw the versions change under them, up to the last one.
        local versions = out:match("versions ([%d,]+)")
        assert.matches(",6$", versions, out)
        assert.is_true(select(2, versions:gsub(",", "")) >= 2, out)
    end)
end)
