-- The order of a request's streams (docs/protocol.md, "Stream order"): PARAMS, then STDIN,
-- then (filter only) DATA, each ended by its empty record. A record that breaks the order is a
-- protocol error: the connection is closed at once, never resynchronised, and the handlers of
-- the other requests on it see req:aborted(). Every violation, in the three roles, alone on
-- its connection and multiplexed with a running request.
package.path = "spec/support/?.lua;spec/protocol/?.lua;" .. package.path
local test = require "moonfcgi.test"
local proto = require "moonfcgi.proto"
local H = require "protocol_helpers"

local PARAMS, STDIN, DATA = proto.PARAMS, proto.STDIN, proto.DATA
local rec = proto.record

-- The params of the request that breaks the order: its handler, once started, waits until
-- it is aborted (the app's "hold"), so that records after its params reach a running request.
local function params_of(role, tag)
    local p = { TAG = tag }
    if role == "authorizer" then
        p.AUTH = "hold"
    else
        p.ACTION = "hold"
    end
    return proto.encode_params(p)
end

local function begin(id, role, tag)
    return proto.begin_request(id, role, true) .. rec(PARAMS, id, params_of(role, tag))
end

local function params_done(id, role, tag)
    return begin(id, role, tag) .. rec(PARAMS, id, "")
end

-- Each case: the valid records first (`before`), whether the handler runs once they are in
-- (`runs`), then the record out of order (`bad`).
local function cases_for(role)
    local cases = {
        { what = "STDIN before the end of PARAMS", runs = false,
          before = begin, bad = function(id) return rec(STDIN, id, "early") end },
        { what = "an empty STDIN before the end of PARAMS", runs = false,
          before = begin, bad = function(id) return rec(STDIN, id, "") end },
        { what = "a STDIN header before the end of PARAMS, its content never sent",
          runs = false, before = begin,
          bad = function(id) return rec(STDIN, id, ("c"):rep(1000)):sub(1, 8) end },
        { what = "PARAMS after the end of PARAMS", runs = true,
          before = params_done, bad = function(id) return rec(PARAMS, id, "\1\1ab") end },
        { what = "an empty PARAMS after the end of PARAMS", runs = true,
          before = params_done, bad = function(id) return rec(PARAMS, id, "") end },
        { what = "STDIN after the end of STDIN", runs = true,
          before = function(id, r, tag) return params_done(id, r, tag) .. rec(STDIN, id, "")
          end,
          bad = function(id) return rec(STDIN, id, "late") end },
    }
    if role == "filter" then
        cases[#cases + 1] = { what = "DATA before STDIN", runs = true, before = params_done,
            bad = function(id) return rec(DATA, id, "file") end }
        cases[#cases + 1] = { what = "DATA before the end of STDIN", runs = true,
            before = function(id, r, tag)
                return params_done(id, r, tag) .. rec(STDIN, id, "half")
            end,
            bad = function(id) return rec(DATA, id, "file") end }
        cases[#cases + 1] = { what = "DATA before the end of PARAMS", runs = false,
            before = begin, bad = function(id) return rec(DATA, id, "file") end }
        cases[#cases + 1] = { what = "DATA after the end of DATA", runs = true,
            before = function(id, r, tag)
                return params_done(id, r, tag) .. proto.stream(STDIN, id, "in")
                    .. proto.stream(DATA, id, "file")
            end,
            bad = function(id) return rec(DATA, id, "more") end }
        cases[#cases + 1] = { what = "STDIN after the end of STDIN, during DATA", runs = true,
            before = function(id, r, tag)
                return params_done(id, r, tag) .. proto.stream(STDIN, id, "in")
                    .. rec(DATA, id, "fi")
            end,
            bad = function(id) return rec(STDIN, id, "late") end }
    else
        cases[#cases + 1] = { what = "DATA, which the role does not have", runs = true,
            before = function(id, r, tag) return params_done(id, r, tag) .. rec(STDIN, id, "")
            end,
            bad = function(id) return rec(DATA, id, "file") end }
        cases[#cases + 1] = { what = "DATA, which the role does not have, before STDIN",
            runs = true, before = params_done, bad = function(id) return rec(DATA, id, "") end }
    end
    return cases
end

for _, role in ipairs({ "responder", "authorizer", "filter" }) do
    describe("a " .. role .. " request that breaks the stream order", function()
        local app, S

        before_each(function()
            app = test.load(H.APP, { timeout = 30 })
            S = H.state()
        end)

        after_each(function()
            app:close()
        end)

        for _, case in ipairs(cases_for(role)) do
            for _, mpx in ipairs({ false, true }) do
                local title = ("with %s closes the connection within a second%s"):format(
                    case.what, mpx and "; the other request on it sees aborted()" or "")
                it(title, function()
                    local tag = ("bad-%s-%s-%s"):format(role, case.what, tostring(mpx))
                    local mate = tag .. "-mate"
                    local conn = app:connect()
                    if mpx then
                        -- A responder on the same connection, waiting in req:read().
                        assert(conn:send_raw(proto.begin_request(2, "responder", true)
                            .. proto.stream(PARAMS, 2, proto.encode_params({ ACTION = "read",
                                                                               TAG = mate }))
                            .. rec(STDIN, 2, "part")))
                        assert.is_true(H.run_until(app, function()
                            return S[mate] and S[mate].chunks == 1
                        end))
                    end
                    assert(conn:send_raw(case.before(1, role, tag)))
                    if case.runs then
                        assert.is_true(H.run_until(app, function() return S[tag] ~= nil end))
                    else
                        app:run(0.02)
                        assert.is_false(conn:closed())
                    end
                    assert(conn:send_raw(case.bad(1)))
                    local recs, err = conn:read_until_closed(1)
                    assert.equal("closed", err)
                    for _, r in ipairs(recs) do
                        assert.is_true(r.type ~= proto.END_REQUEST, "no request was ended")
                    end
                    if case.runs then
                        assert.is_true(H.run_until(app, function() return S[tag].done end, 1))
                        assert.is_true(S[tag].aborted)
                    else
                        assert.is_nil(S[tag])
                    end
                    if mpx then
                        assert.is_true(H.run_until(app, function() return S[mate].done end, 1))
                        assert.is_true(S[mate].aborted)
                        assert.equal("aborted", S[mate].read_err)
                    end
                    assert.is_true(H.run_until(app, function()
                        local st = app:stats()
                        return st.requests == 0 and st.connections == 0
                    end, 1))
                    conn:close()
                    -- Another connection is served as usual.
                    local other = app:connect()
                    local res = assert(other:request{ params = { TAG = "next" }, stdin = "ok" })
                    assert.equal("next:ok", res.body)
                    other:close()
                end)
            end
        end

        it("in order, with every stream split in records, is served", function()
            local conn = app:connect()
            local res = assert(conn:request{ role = role, params = { TAG = "fine", AUTH = "yes" },
                                             stdin = role == "authorizer" and "" or { "a", "b" },
                                             data = role == "filter" and { "d", "e" } or nil })
            assert.equal(200, res.status)
            conn:close()
        end)
    end)
end
