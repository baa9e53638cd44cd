-- Management records (FCGI_GET_VALUES, FCGI_UNKNOWN_TYPE) and the END_REQUEST protocol
-- statuses other than REQUEST_COMPLETE (UNKNOWN_ROLE, OVERLOADED): docs/protocol.md
-- "Management records" and "Requests".
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local process = require "process"
local client = require "moonfcgi.client"
local H = require "protocol_helpers"

local function names_of(rec)
    local list = assert(proto.decode_params(rec.content))
    local names = {}
    for i, p in ipairs(list) do
        names[i] = p[1]
    end
    table.sort(names)
    return names, list
end

describe("FCGI_GET_VALUES", function()
    local app

    before_each(function()
        app = test.load(H.APP, { max_conns = 50, max_reqs = 7 })
    end)

    after_each(function()
        app:close()
    end)

    it("answers FCGI_MAX_CONNS, FCGI_MAX_REQS and FCGI_MPXS_CONNS", function()
        local conn = app:connect()
        local v = assert(conn:get_values{ "FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS" })
        assert.same({ FCGI_MAX_CONNS = "50", FCGI_MAX_REQS = "7", FCGI_MPXS_CONNS = "1" }, v)
        conn:close()
    end)

    it("answers each known name once even when it is asked for repeatedly", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.get_values{ "FCGI_MAX_REQS", "FCGI_MAX_REQS",
                                               "FCGI_MPXS_CONNS", "FCGI_MAX_REQS" }))
        local rec = assert(conn:read_record(2))
        assert.equal(proto.GET_VALUES_RESULT, rec.type)
        assert.equal(0, rec.id)
        assert.same({ "FCGI_MAX_REQS", "FCGI_MPXS_CONNS" }, names_of(rec))
        assert.same({}, H.read_rest(conn))
        conn:close()
    end)

    it("leaves unknown names out", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.get_values{ "FCGI_UNKNOWN", "FCGI_MAX_CONNS", "X", "" }))
        local rec = assert(conn:read_record(2))
        assert.equal(proto.GET_VALUES_RESULT, rec.type)
        assert.same({ "FCGI_MAX_CONNS" }, names_of(rec))
        conn:close()
    end)

    it("answers a query that is the last bytes in the buffer, after a request", function()
        local conn = app:connect()
        assert(conn:send_raw(H.request_bytes(1, { params = { TAG = "q" }, stdin = "b" })
            .. proto.get_values{ "FCGI_MPXS_CONNS" }))
        local recs = assert(H.read_until_end(conn, 1))
        local results = H.of(recs, 0, proto.GET_VALUES_RESULT)
        if #results == 0 then
            results[1] = assert(conn:read_record(2))
        end
        assert.equal(proto.GET_VALUES_RESULT, results[1].type)
        assert.same({ "FCGI_MPXS_CONNS" }, names_of(results[1]))
        assert.equal("q:b", H.response(recs, 1).body)
        conn:close()
    end)

    it("answers a query that arrives in pieces", function()
        local conn = app:connect()
        local bytes = proto.get_values{ "FCGI_MAX_REQS" }
        for _, cut in ipairs({ { 1, 5 }, { 6, 12 }, { 13, #bytes } }) do
            assert(conn:send_raw(bytes:sub(cut[1], cut[2])))
            app:step(0)
        end
        local rec = assert(conn:read_record(2))
        assert.equal(proto.GET_VALUES_RESULT, rec.type)
        assert.same({ "FCGI_MAX_REQS" }, names_of(rec))
        conn:close()
    end)

    it("answers every GET_VALUES of one write, in order", function()
        local conn = app:connect()
        assert(conn:send_raw(proto.get_values{ "FCGI_MAX_CONNS" }
            .. proto.get_values{ "FCGI_MAX_REQS" } .. proto.get_values{ "FCGI_MPXS_CONNS" }))
        local want = { "FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS" }
        for i = 1, 3 do
            local rec = assert(conn:read_record(2))
            assert.equal(proto.GET_VALUES_RESULT, rec.type)
            assert.same({ want[i] }, names_of(rec))
        end
        conn:close()
    end)

    it("keeps the connection open and serving after answering", function()
        local conn = app:connect()
        assert(conn:get_values{ "FCGI_MAX_CONNS" })
        assert.is_false(conn:closed())
        assert.equal("g:v", assert(conn:request{ params = { TAG = "g" }, stdin = "v" }).body)
        conn:close()
    end)
end)

describe("FCGI_UNKNOWN_TYPE", function()
    local app

    before_each(function()
        app = test.load(H.APP)
    end)

    after_each(function()
        app:close()
    end)

    for _, t in ipairs({ 12, 100, 255 }) do
        it("answers an unknown management record type " .. t, function()
            local conn = app:connect()
            assert(conn:send_raw(proto.record(t, 0, "whatever")))
            local rec = assert(conn:read_record(2))
            assert.equal(proto.UNKNOWN_TYPE, rec.type)
            assert.equal(0, rec.id)
            assert.equal(8, #rec.content)
            assert.equal(t, rec.content:byte(1))
            assert.equal(string.rep("\0", 7), rec.content:sub(2))
            conn:close()
        end)
    end

    for _, t in ipairs({ 12, 13, 200 }) do
        it("answers type " .. t .. " on a request id, and the request goes on", function()
            local conn = app:connect()
            local id = assert(conn:send{ params = { TAG = "u" }, stdin = false })
            assert(conn:send_raw(proto.record(t, id, "junk")))
            local rec = assert(conn:read_record(2))
            assert.equal(proto.UNKNOWN_TYPE, rec.type)
            assert.equal(0, rec.id)
            assert.equal(t, rec.content:byte(1))
            assert(conn:send_raw(proto.stream(proto.STDIN, id, "body")))
            assert.equal("u:body", assert(conn:wait(id)).body)
            conn:close()
        end)
    end
end)

describe("FCGI_UNKNOWN_ROLE", function()
    local app

    after_each(function()
        app:close()
    end)

    for _, role in ipairs({ 0, 4, 65535 }) do
        it("ends a request for role " .. role .. " and the connection goes on", function()
            app = test.load(H.APP)
            local conn = app:connect()
            local res = assert(conn:request{ role = role, params = { TAG = "r" }, stdin = "" })
            assert.equal("unknown_role", res.protocol_status)
            assert.equal("", res.stdout)
            assert.equal(0, app:stats().requests)
            assert.equal("ok:1", assert(conn:request{ params = { TAG = "ok" }, stdin = "1" }).body)
            conn:close()
        end)
    end

    it("ends a filter request to an app without a filter handler", function()
        app = test.load("spec/protocol/apps/responder_only.lua")
        local res = assert(app:request{ role = "filter", params = {}, stdin = "", data = "d" })
        assert.equal("unknown_role", res.protocol_status)
        assert.equal("", res.stdout)
        assert.equal("responder", assert(app:request{ params = {} }).body)
    end)

    it("ends an authorizer request to an app without an authorize handler", function()
        app = test.load("spec/protocol/apps/responder_only.lua")
        local res = assert(app:request{ role = "authorizer", params = {}, stdin = "" })
        assert.equal("unknown_role", res.protocol_status)
        assert.equal("", res.stdout)
        assert.is_nil(res.status)
    end)

    it("sends exactly one END_REQUEST and ignores the rest of that request's records", function()
        app = test.load(H.APP)
        local conn = app:connect()
        assert(conn:send_raw(H.request_bytes(1, { role = 4, params = { TAG = "x" },
                                                  stdin = "ignored" })))
        local recs = assert(H.read_until_end(conn, 1))
        for _, r in ipairs(H.read_rest(conn)) do
            recs[#recs + 1] = r
        end
        assert.equal(1, #recs)
        conn:close()
    end)
end)

-- FCGI_UNKNOWN_ROLE from the moonfcgi binary, with its warning in the host log: the lighttpd
-- entry of known_failures_spec.lua.

describe("FCGI_OVERLOADED", function()
    local app, S

    before_each(function()
        app = test.load(H.APP, { max_reqs = 4, timeout = 5 })
        S = H.state()
    end)

    after_each(function()
        app:close()
    end)

    -- n requests whose handlers wait for a body the spec has not sent: they stay in flight
    -- until release() sends it, however slow the machine is.
    local function held(conn, n, prefix)
        local ids = {}
        for i = 1, n do
            ids[i] = assert(conn:send{ params = { ACTION = "read", TAG = prefix .. i },
                                       stdin = false })
        end
        return ids
    end

    local function release(conn, ids)
        for _, id in ipairs(ids) do
            assert(conn:send_raw(proto.record(proto.STDIN, id, "body " .. id)
                .. proto.record(proto.STDIN, id, "")))
        end
    end

    it("completes all requests at --max-reqs", function()
        local conn = app:connect()
        local ids = held(conn, 4, "at")
        assert.is_true(H.run_until(app, function() return app:stats().requests == 4 end))
        release(conn, ids)
        for i = 1, 4 do
            local res = assert(conn:wait(ids[i]))
            assert.equal("complete", res.protocol_status)
            assert.equal("body " .. ids[i], res.body)
        end
        conn:close()
    end)

    it("answers one request past --max-reqs with OVERLOADED, the others complete", function()
        local conn = app:connect()
        local ids = held(conn, 4, "past")
        assert.is_true(H.run_until(app, function() return app:stats().requests == 4 end))
        local extra = assert(conn:send{ params = { TAG = "extra" }, stdin = "" })
        local res = assert(conn:wait(extra))
        assert.equal("overloaded", res.protocol_status)
        assert.equal("", res.stdout)
        assert.equal(1, res.records)
        release(conn, ids)
        for i = 1, 4 do
            assert.equal("body " .. ids[i], assert(conn:wait(ids[i])).body)
        end
        -- Room again: the next request is served.
        assert.equal("again:", assert(conn:request{ params = { TAG = "again" }, stdin = "" }).body)
        conn:close()
    end)

    it("counts requests of every connection against --max-reqs", function()
        local a, b = app:connect(), app:connect()
        local ids = held(a, 2, "a")
        local ids2 = held(b, 2, "b")
        assert.is_true(H.run_until(app, function() return app:stats().requests == 4 end))
        local c = app:connect()
        assert.equal("overloaded", assert(c:request{ params = {}, stdin = "" }).protocol_status)
        release(a, ids)
        release(b, ids2)
        for i = 1, 2 do
            assert.equal("body " .. ids[i], assert(a:wait(ids[i])).body)
            assert.equal("body " .. ids2[i], assert(b:wait(ids2[i])).body)
        end
        a:close(); b:close(); c:close()
    end)
end)

describe("the limits with the moonfcgi binary", function()
    it("reports --max-conns and --max-reqs in GET_VALUES and overloads past --max-reqs", function()
        local p = assert(process.moonfcgi(H.APP, { args = { "--workers", "1", "--max-reqs", "2",
                                                            "--max-conns", "10" } }))
        finally(function() p:cleanup() end)
        local conn = assert(client.connect(p.addr, { timeout = 5 }))
        local values = conn:get_values{ "FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS" }
        -- Two requests that stay in flight until their bodies are sent; each writes "go"
        -- first, so that once both are seen the third is sure to find the worker full.
        local ids = {}
        for i = 1, 2 do
            ids[i] = assert(conn:send{ params = { ACTION = "read", FIRST = "go",
                                                  TAG = "b" .. i }, stdin = false })
        end
        for i = 1, 2 do
            local deadline = client.now() + 10
            local part
            repeat
                part = select(3, conn:wait(ids[i], 0.05))
            until (part and part.stdout:find("go", 1, true)) or client.now() >= deadline
            assert.truthy(part and part.stdout:find("go", 1, true), "request " .. i
                .. " did not start")
        end
        local c2 = assert(client.connect(p.addr, { timeout = 5 }))
        local extra = c2:request{ params = { TAG = "extra" }, stdin = "" }
        local done = {}
        for i = 1, 2 do
            assert(conn:send_raw(proto.record(proto.STDIN, ids[i], "")))
        end
        for i = 1, 2 do
            done[i] = conn:wait(ids[i], 5)
        end
        conn:close()
        c2:close()
        p:stop()
        p:cleanup()
        assert.same({ FCGI_MAX_CONNS = "10", FCGI_MAX_REQS = "2", FCGI_MPXS_CONNS = "1" }, values)
        assert.is_table(extra)
        assert.equal("overloaded", extra.protocol_status)
        for i = 1, 2 do
            assert.is_table(done[i])
            assert.equal("go", done[i].body)
        end
    end)
end)
