-- The params a handler sees through --http are the ones nginx sends for the same request with
-- its stock fastcgi_params: one moonfcgi serves both (--listen behind nginx, --http straight),
-- and the same request through each must show the same CGI variables.
package.path = "spec/support/?.lua;spec/?.lua;" .. package.path
local process = require "process"
local nginx = require "nginx"
local http = require "http_client"
local needs = require "needs"
local cjson = require "cjson"

-- Differ by nature: who is serving, where, and on which ports.
local DIFFERENT = {
    SERVER_SOFTWARE = true, DOCUMENT_ROOT = true, SCRIPT_FILENAME = true, SERVER_NAME = true,
    SERVER_PORT = true, REMOTE_PORT = true, HTTP_HOST = true,
}

describe("--http params", function()
    local srv, web

    setup(function()
        if not nginx.find() then
            return
        end
        local fport = process.free_port()
        srv = assert(process.moonfcgi("spec/http/apps/http.lua", { http = true,
            args = { "--workers", "1", "--listen", "127.0.0.1:" .. fport } }))
        web = assert(nginx.start{ upstream = "127.0.0.1:" .. fport })
    end)

    teardown(function()
        if web then
            web:stop()
        end
        if srv then
            srv:cleanup()
        end
        http.cleanup()
    end)

    local function both(path, opts)
        opts = opts or {}
        local a = http.get(web.url .. path, opts)
        local b = http.get("http://" .. srv.addr .. path, opts)
        assert.equal(200, a.status, a.body)
        assert.equal(200, b.status, b.body)
        return cjson.decode(a.body), cjson.decode(b.body)
    end

    local function same(path, opts)
        local from_nginx, ours = both(path, opts)
        for k, v in pairs(from_nginx) do
            if not DIFFERENT[k] then
                assert.equal(v, ours[k], k .. " differs for " .. path)
            end
        end
        for k in pairs(ours) do
            if from_nginx[k] == nil and k ~= "PATH_INFO" then
                error(k .. " is sent by --http but not by nginx (" .. path .. ")")
            end
        end
        return from_nginx, ours
    end

    it("match nginx's for a GET with a query and headers", function()
        if not web then
            pending(needs.missing("nginx not installed (apt-get install nginx)"))
            return
        end
        local n = same("/params?x=1&y=a%20b", { headers = { ["X-Custom-Thing"] = "v",
            Accept = "text/plain", Cookie = "a=1" } })
        assert.equal("v", n.HTTP_X_CUSTOM_THING)
    end)

    it("match nginx's for a POST with a body", function()
        if not web then
            pending(needs.missing("nginx not installed (apt-get install nginx)"))
            return
        end
        same("/params", { method = "POST", body = "hello",
            headers = { ["Content-Type"] = "text/plain" } })
    end)

    it("match nginx's for an encoded and dotted path", function()
        if not web then
            pending(needs.missing("nginx not installed (apt-get install nginx)"))
            return
        end
        -- Both normalize it to /params; REQUEST_URI stays as sent.
        same("/a/../params", { args = { "--path-as-is" } })
    end)
end)
