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
