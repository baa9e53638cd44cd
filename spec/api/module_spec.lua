-- docs/api.md, "The `moonfcgi` module": the moonfcgi module, as handlers and specs see it.
local test = require "moonfcgi.test"
local moonfcgi = require "moonfcgi"

_G.api_handlers = _G.api_handlers or {}
local handlers = _G.api_handlers

describe("the moonfcgi module", function()
    local app

    before_each(function()
        app = test.load("spec/api/apps/handlers.lua", { timeout = 5 })
    end)

    after_each(function()
        app:close()
    end)

    describe("moonfcgi.sleep", function()
        it("lets other requests run: the second completes while the first sleeps", function()
            local order = {}
            -- The sleeper sleeps until the quick one has run (bounded): were sleep to block
            -- the worker, the quick one could not run meanwhile, and the order would differ.
            handlers.sleeper = function(req)
                for _ = 1, 1000 do
                    moonfcgi.sleep(0.01)
                    if order[1] == "quick" then
                        break
                    end
                end
                order[#order + 1] = "sleeper"
                req:write("slept")
            end
            handlers.quick = function(req)
                order[#order + 1] = "quick"
                req:write("quick")
            end
            local conn = app:connect()
            local a = assert(conn:send{ params = { H = "sleeper" }, stdin = "" })
            local b = assert(conn:send{ params = { H = "quick" }, stdin = "" })
            assert.equal("quick", assert(conn:wait(b)).body)
            assert.same({ "quick" }, order) -- the sleeper has not finished yet
            assert.equal("slept", assert(conn:wait(a)).body)
            assert.same({ "quick", "sleeper" }, order)
            conn:close()
        end)

        it("waits about the given time", function()
            local elapsed
            handlers.timed = function()
                local t0 = moonfcgi.now()
                moonfcgi.sleep(0.1)
                elapsed = moonfcgi.now() - t0
            end
            assert(app:request{ params = { H = "timed" } })
            assert.is_true(elapsed >= 0.09, "slept " .. tostring(elapsed))
        end)

        it("in a spec's own code keeps the loaded app running meanwhile", function()
            local done = false
            handlers.bg = function(req)
                moonfcgi.sleep(0.05)
                done = true
                req:write("bg")
            end
            local conn = app:connect()
            local id = assert(conn:send{ params = { H = "bg" }, stdin = "" })
            local t0 = moonfcgi.now()
            moonfcgi.sleep(0.2)
            assert.is_true(moonfcgi.now() - t0 >= 0.15)
            assert.is_true(done)
            assert.equal("bg", assert(conn:wait(id, 1)).body)
            conn:close()
        end)

        it("accepts 0 and rejects a negative or non-number argument", function()
            local got = {}
            handlers.sleep_args = function()
                got[1] = pcall(moonfcgi.sleep, 0)
                got[2] = pcall(moonfcgi.sleep, -1)
                got[3] = pcall(moonfcgi.sleep, "1")
            end
            assert(app:request{ params = { H = "sleep_args" } })
            assert.same({ true, false, false }, got)
        end)
    end)

    describe("moonfcgi.now", function()
        it("is the loop's time in seconds, a float, and increases", function()
            local t = {}
            handlers.now = function()
                t[1] = moonfcgi.now()
                moonfcgi.sleep(0.05)
                t[2] = moonfcgi.now()
            end
            assert(app:request{ params = { H = "now" } })
            assert.is_number(t[1])
            assert.is_true(t[2] > t[1])
            assert.is_true(t[2] - t[1] >= 0.04)
            assert.is_true(math.abs(t[1] - os.time()) < 5)
            assert.is_true(t[2] ~= math.floor(t[2]) or t[1] ~= math.floor(t[1]))
        end)
    end)

    describe("moonfcgi.log", function()
        it("accepts the four levels and rejects others", function()
            local got = {}
            handlers.log = function()
                for i, level in ipairs({ "error", "warn", "info", "debug" }) do
                    got[i] = pcall(moonfcgi.log, level, "a line at", level)
                end
                got[5] = pcall(moonfcgi.log, "loud", "x")
            end
            assert(app:request{ params = { H = "log" } })
            assert.same({ true, true, true, true, false }, got)
        end)
        -- That the line reaches the host log is checked with the binary in cli_spec.lua.
    end)

    describe("moonfcgi.worker", function()
        it("is 1 in the test harness", function()
            local got
            handlers.worker = function() got = moonfcgi.worker end
            assert(app:request{ params = { H = "worker" } })
            assert.equal(1, got)
            assert.equal(1, moonfcgi.worker)
        end)
    end)
end)
