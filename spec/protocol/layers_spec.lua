-- The connection layer's files include each other in one direction only (issue 13): the
-- worker drives listeners, listeners make protocol connections (fcgi.c, http.c), protocols
-- make requests, requests write through conn.c, and all of them share loop.h. A module uses
-- another when its .c or .h includes the other's header; the graph must have no cycle.
local MODULES = { "loop", "conn", "request", "fcgi", "http", "listener", "worker" }

local function includes(module)
    local used = {}
    for _, ext in ipairs({ ".c", ".h" }) do
        local f = io.open("src/" .. module .. ext, "rb")
        if f then
            for name in f:read("*a"):gmatch('#include "([%w_]+)%.h"') do
                if name ~= module then
                    used[name] = true
                end
            end
            f:close()
        end
    end
    return used
end

describe("the connection layer's includes", function()
    local graph = {}
    for _, m in ipairs(MODULES) do
        graph[m] = includes(m)
    end

    it("form no cycle among loop, conn, request, fcgi, http, listener and worker", function()
        local state = {}
        local function visit(m, path)
            if state[m] == "done" then
                return
            end
            assert(state[m] ~= "open", "include cycle: " .. table.concat(path, " -> ") .. " -> " .. m)
            state[m] = "open"
            path[#path + 1] = m
            for dep in pairs(graph[m]) do
                if graph[dep] then
                    visit(dep, path)
                end
            end
            path[#path] = nil
            state[m] = "done"
        end
        for _, m in ipairs(MODULES) do
            visit(m, {})
        end
    end)

    it("keep conn.c free of requests, protocols and the worker", function()
        for _, other in ipairs({ "request", "fcgi", "http", "listener", "worker" }) do
            assert.is_nil(graph.conn[other], "conn includes " .. other .. ".h")
        end
        assert.is_nil(graph.request.worker, "request includes worker.h")
        assert.is_nil(graph.loop.request, "loop includes request.h")
    end)
end)
