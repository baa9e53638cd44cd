-- Requests that never finish their params hold memory: each is capped by --max-params, and
-- all of a worker's together by max(64 MiB, 4 x --max-params).
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"

describe("unfinished params of many requests", function()
    it("are capped together: past 64 MiB a request's params are dropped and it gets a 431",
        function()
            local app = test.load("examples/hello.lua", { max_params = 8 * 1024 * 1024 })
            finally(function()
                app:close()
            end)
            local conn = app:connect()
            local value = string.rep("v", 65000)
            -- 17 requests with 4 MiB of params each, none finished yet: 68 MiB in all.
            for id = 1, 17 do
                assert(conn:send_raw(proto.begin_request(id, "responder", true)))
                local pieces = {}
                for i = 1, 64 do
                    pieces[i] = proto.record(proto.PARAMS, id, proto.encode_pair("P" .. i, value))
                end
                assert(conn:send_raw(table.concat(pieces)))
            end
            app:run(0.2)
            -- Now finish them all; the last ones went past the cap.
            for id = 1, 17 do
                assert(conn:send_raw(proto.record(proto.PARAMS, id, "")
                    .. proto.record(proto.STDIN, id, "")))
            end
            local statuses = {}
            local ended = 0
            while ended < 17 do
                local rec = assert(conn:read_record(10))
                if rec.type == proto.STDOUT and #rec.content > 0 then
                    statuses[rec.id] = tonumber(rec.content:match("^Status: (%d+)"))
                elseif rec.type == proto.END_REQUEST then
                    ended = ended + 1
                end
            end
            local ok, over = 0, 0
            for id = 1, 17 do
                if statuses[id] == 431 then
                    over = over + 1
                elseif statuses[id] == 200 then
                    ok = ok + 1
                end
            end
            -- As many whole requests as fit in 64 MiB are kept; the rest get 431.
            local per_request = 64 * #proto.encode_pair("P10", value)
            local fit = math.floor(64 * 1024 * 1024 / per_request)
            assert.is_true(fit < 17)
            assert.equal(fit, ok)
            assert.equal(17 - fit, over)
            assert.equal(0, app:stats().requests)
        end)
end)
