-- Requests that end early (docs/protocol.md "Requests" and "How the web servers behave"):
-- FCGI_ABORT_REQUEST, and the connection closing under a running request, in every phase of a
-- request's life. Each time: exactly one END_REQUEST (when the connection is still there),
-- nothing for the id after it, the handler sees req:aborted() and failing reads and writes, and
-- the core's request count returns to 0.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local H = require "protocol_helpers"

local MiB = 1024 * 1024

describe("a request that ends early", function()
    local app, S

    before_each(function()
        app = test.load(H.APP, { timeout = 5, read_timeout = 5 })
        S = H.state()
    end)

    after_each(function()
        app:close()
    end)

    local function note(tag)
        return S[tag] or {}
    end

    -- Starts a request in the given phase on conn (id 1); returns its tag.
    local phases = {}

    phases["before its params are complete"] = function(conn, tag)
        local n = app:stats().requests
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.record(proto.PARAMS, 1, proto.encode_params({ TAG = tag }))))
        assert.is_true(H.run_until(app, function() return app:stats().requests == n + 1 end))
    end

    phases["while its handler waits in read()"] = function(conn, tag)
        assert(conn:send_raw(proto.begin_request(1, "responder", true)
            .. proto.stream(proto.PARAMS, 1, proto.encode_params({ ACTION = "read", TAG = tag }))
            .. proto.record(proto.STDIN, 1, "first")))
        assert.is_true(H.run_until(app, function() return note(tag).chunks == 1 end))
        assert.is_nil(note(tag).done) -- it waits for the rest of the body
    end

    phases["while its handler sleeps"] = function(conn, tag)
        assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "sleep", SECONDS = "0.2",
                                                             TAG = tag } })))
        assert.is_true(H.run_until(app, function() return note(tag).started end))
    end

    phases["while its handler is blocked on write backpressure"] = function(conn, tag)
        assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "flood",
            SIZE = tostring(20 * MiB), TAG = tag } })))
        -- Blocked: the counter stops advancing while the client reads nothing.
        local last = -1
        assert.is_true(H.run_until(app, function()
            local w = note(tag).written
            if w and w == last then
                return true
            end
            last = w or -1
            app:run(0.05)
            return false
        end, 3))
        assert.is_nil(note(tag).done)
    end

    local handler_phases = {
        ["while its handler waits in read()"] = true,
        ["while its handler sleeps"] = true,
        ["while its handler is blocked on write backpressure"] = true,
    }

    local order = {
        "before its params are complete",
        "while its handler waits in read()",
        "while its handler sleeps",
        "while its handler is blocked on write backpressure",
    }

    describe("by FCGI_ABORT_REQUEST", function()
        for _, phase in ipairs(order) do
            it(phase .. " gets one END_REQUEST and nothing after it", function()
                local tag = "abort " .. phase
                local conn = app:connect()
                local runs = S.runs
                phases[phase](conn, tag)
                assert(conn:send_raw(proto.abort_request(1)))
                local recs, err = H.read_until_end(conn, 1, 5)
                assert(recs, err)
                for _, r in ipairs(H.read_rest(conn)) do
                    recs[#recs + 1] = r
                end
                local ends = H.of(recs, 1, proto.END_REQUEST)
                assert.equal(1, #ends)
                local _, ps = proto.decode_end_request(ends[1].content)
                assert.equal(proto.REQUEST_COMPLETE, ps)
                assert.same({}, H.after_end(recs, 1))
                if handler_phases[phase] then
                    local n = note(tag)
                    assert.is_true(n.done)
                    assert.is_true(n.aborted)
                    assert.is_nil(n.write_result)
                    assert.equal("aborted", n.write_err)
                    if n.read_err ~= nil or phase:find("read", 1, true) then
                        assert.equal("aborted", n.read_err)
                    end
                    if n.written then
                        assert.is_true(n.written < 20 * MiB)
                    end
                else
                    assert.equal(runs, S.runs) -- the handler never ran
                end
                assert.is_true(H.run_until(app, function() return app:stats().requests == 0 end))
                -- The connection goes on: the id is free again.
                local res = assert(conn:request{ id = 1, params = { TAG = "next" }, stdin = "ok" })
                assert.equal("next:ok", res.body)
                conn:close()
            end)
        end

        it("in the same write as the whole request gets one END_REQUEST", function()
            local conn = app:connect()
            assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "sleep",
                SECONDS = "0.1", TAG = "same write" } }) .. proto.abort_request(1)))
            local recs = assert(H.read_until_end(conn, 1))
            for _, r in ipairs(H.read_rest(conn)) do
                recs[#recs + 1] = r
            end
            assert.equal(1, #H.of(recs, 1, proto.END_REQUEST))
            assert.same({}, H.after_end(recs, 1))
            if note("same write").started then
                assert.is_true(note("same write").aborted)
            end
            assert.equal(0, app:stats().requests)
            conn:close()
        end)

        it("after the request finished is ignored, and the connection goes on", function()
            local conn = app:connect()
            local res = assert(conn:request{ id = 1, params = { TAG = "done" }, stdin = "x" })
            assert.equal("done:x", res.body)
            assert(conn:send_raw(proto.abort_request(1)))
            local late = H.read_rest(conn)
            assert.same({}, late)
            assert.equal(0, app:stats().requests)
            res = assert(conn:request{ id = 1, params = { TAG = "after" }, stdin = "y" })
            assert.equal("after:y", res.body)
            conn:close()
        end)

        it("of one request leaves the others on the connection alone", function()
            local conn = app:connect()
            assert(conn:send_raw(H.request_bytes(1, { params = { ACTION = "sleep",
                SECONDS = "0.2", TAG = "aborted one" } })
                .. H.request_bytes(2, { params = { ACTION = "sleep", SECONDS = "0.2",
                                                   TAG = "other one" } })))
            assert.is_true(H.run_until(app, function()
                return note("aborted one").started and note("other one").started
            end))
            assert(conn:send_raw(proto.abort_request(1)))
            local recs = assert(H.read_until_end(conn, { 1, 2 }, 5))
            local res = H.response(recs, 2)
            assert.equal(200, res.status)
            assert.equal("slept", res.body)
            assert.is_true(note("aborted one").aborted)
            assert.is_false(note("other one").aborted)
            conn:close()
        end)
    end)

    describe("by the connection closing", function()
        local sigpipe

        before_each(function()
            sigpipe = H.ignore_sigpipe()
        end)

        after_each(function()
            app:close() -- before SIGPIPE is back at its default action
            H.restore_sigpipe(sigpipe)
        end)

        for _, phase in ipairs(order) do
            it(phase .. " is aborted and freed; other connections are unaffected", function()
                local tag = "close " .. phase
                local other = app:connect()
                local other_id = assert(other:send{ params = { TAG = "other" }, stdin = false })
                assert.is_true(H.run_until(app, function() return app:stats().requests == 1 end))
                local conn = app:connect()
                phases[phase](conn, tag)
                local before = app:stats()
                conn:close()
                assert.is_true(H.run_until(app, function()
                    local st = app:stats()
                    return st.requests == 1 and st.connections == before.connections - 1
                end, 3), "the request was not freed")
                if handler_phases[phase] then
                    assert.is_true(H.run_until(app, function() return note(tag).done end, 3))
                    local n = note(tag)
                    assert.is_true(n.aborted)
                    assert.is_nil(n.write_result)
                    assert.equal("aborted", n.write_err)
                    if n.read_err ~= nil or phase:find("read", 1, true) then
                        assert.equal("aborted", n.read_err)
                    end
                end
                -- The other connection's request is still in flight, then completes.
                assert(other:send_raw(proto.stream(proto.STDIN, other_id, "still here")))
                local res = assert(other:wait(other_id))
                assert.equal("other:still here", res.body)
                assert.equal(0, app:stats().requests)
                other:close()
            end)
        end

        it("in the middle of a record frees the request", function()
            local conn = app:connect()
            assert(conn:send_raw(proto.begin_request(1, "responder", true)
                .. proto.stream(proto.PARAMS, 1, proto.encode_params({ ACTION = "read",
                                                                        TAG = "mid" }))
                .. proto.record(proto.STDIN, 1, string.rep("s", 1000)):sub(1, 500)))
            assert.is_true(H.run_until(app, function() return note("mid").started end))
            conn:close()
            assert.is_true(H.run_until(app, function() return note("mid").done end, 3))
            assert.equal("aborted", note("mid").read_err)
            assert.is_true(H.run_until(app, function() return app:stats().requests == 0 end))
        end)

        it("after the request finished frees nothing more and leaves others alone", function()
            local other = app:connect()
            local conn = app:connect()
            assert(conn:request{ params = { TAG = "fin" }, stdin = "x" })
            conn:close()
            assert.is_true(H.run_until(app, function() return app:stats().connections == 1 end))
            assert.equal(0, app:stats().requests)
            assert.equal("o:k", assert(other:request{ params = { TAG = "o" }, stdin = "k" }).body)
            other:close()
        end)
    end)
end)
