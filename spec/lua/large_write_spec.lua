-- Large writes are sent by reference into the Lua string: it must stay alive (pinned) until
-- the connection has sent it, even when the handler drops it and the GC runs.
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"

describe("a large write", function()
    it("delivers every byte of strings the handler dropped while the client was not reading",
        function()
            local app = test.load("spec/lua/apps/large_write.lua")
            finally(function()
                app:close()
            end)
            local conn = app:connect()
            assert(conn:send_raw(proto.request{ id = 1, params = { PIECES = "6" } }))
            -- Let the handler write everything it can and collect garbage meanwhile.
            app:run(0.3)
            collectgarbage("collect")
            local parser_body = {}
            while true do
                local rec = assert(conn:read_record(10))
                if rec.type == proto.END_REQUEST then
                    break
                elseif rec.type == proto.STDOUT then
                    parser_body[#parser_body + 1] = rec.content
                end
                if #parser_body % 4 == 0 then
                    collectgarbage("collect")
                end
            end
            local out = table.concat(parser_body)
            local body = out:sub((out:find("\r\n\r\n", 1, true)) + 4)
            local expect = {}
            for i = 1, 6 do
                expect[i] = string.rep(string.char(64 + i), 200 * 1024 + i)
            end
            assert.equal(#table.concat(expect), #body)
            assert.is_true(body == table.concat(expect), "the body differs from what was written")
        end)
end)

describe("pinned strings", function()
    it("are released once sent, and their tokens reused without mixing up bodies", function()
        local runtime = require "moonfcgi.runtime"
        local app = test.load("spec/lua/apps/large_writes_many.lua")
        finally(function()
            app:close()
        end)
        local before = runtime.pinned_count()
        -- Several connections at once, so pins are live together and released out of order.
        local conns = {}
        for i = 1, 4 do
            conns[i] = app:connect()
        end
        for round = 1, 25 do
            local ids = {}
            for i = 1, 4 do
                local n = round * 4 + i
                ids[i] = assert(conns[i]:send{ params = { N = tostring(n) } })
            end
            for i = 1, 4 do
                local n = round * 4 + i
                local res = assert(conns[i]:wait(ids[i], 10))
                assert.equal(200, res.status)
                local want = string.rep(string.char(65 + n % 26), 40 * 1024 + n) .. "|"
                    .. string.rep(string.char(97 + n % 26), 33 * 1024 + n)
                assert.equal(#want, #res.body)
                assert.is_true(res.body == want, "the body of request " .. n .. " differs")
            end
            if round % 5 == 0 then
                collectgarbage("collect")
            end
        end
        -- The last answers are read: libevent lets go of their blocks at its next turns.
        for _ = 1, 1000 do
            if runtime.pinned_count() == before then
                break
            end
            app:run(0.01)
        end
        assert.equal(before, runtime.pinned_count())
        assert.is_true(runtime.pinned_count() < 8, "pins left: " .. runtime.pinned_count())
    end)
end)
