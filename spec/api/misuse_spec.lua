-- A handler that misuses the request API gets an error that names its own line, the way
-- Lua's own functions report bad arguments.
local test = require "moonfcgi.test"

local CASES = {
    "write_table", "write_second", "raw_after_write", "raw_second", "header_name",
    "header_value", "header_list", "header_crlf", "header_late", "status_code", "status_late", "param_name",
    "read_negative", "read_data", "variable",
}

describe("request API misuse", function()
    local app
    setup(function()
        app = test.load("spec/api/apps/misuse.lua")
    end)
    teardown(function()
        app:close()
    end)

    for _, case in ipairs(CASES) do
        it("points at the handler's line: " .. case, function()
            local res = assert(app:request{ params = { CASE = case } })
            local ok, line, err = res.body:match("\n([^|]*)|([^|]*)|(.*)$")
            assert.equal("false", ok)
            assert.is_truthy(err:find("misuse.lua:" .. line .. ": ", 1, true),
                "the error names another place: " .. err)
        end)
    end
end)
