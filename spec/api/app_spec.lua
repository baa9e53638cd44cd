-- docs/api.md, "The app file": the forms an app may take, what is not an app, and where
-- `require` looks first.
local test = require "moonfcgi.test"

local APPS = "spec/api/apps/"

describe("an app file", function()
    it("may return a function: the responder", function()
        local app = test.load(APPS .. "function_form.lua")
        finally(function() app:close() end)
        local res = assert(app:request{ params = {} })
        assert.equal(200, res.status)
        assert.equal("function form, role responder", res.body)
        -- A function app has no other role.
        assert.equal("unknown_role", assert(app:request{ role = "filter", params = {},
                                                         data = "" }).protocol_status)
        assert.equal("unknown_role", assert(app:request{ role = "authorizer",
                                                         params = {} }).protocol_status)
        app:close()
    end)

    it("may return a table of role handlers", function()
        local app = test.load(APPS .. "table_form.lua")
        finally(function() app:close() end)
        assert.equal("respond", assert(app:request{ params = {} }).body)
        local auth = assert(app:request{ role = "authorizer", params = {} })
        assert.equal(200, auth.status)
        assert.equal("table", auth.headers["variable-form"])
        assert.equal("filter data!", assert(app:request{ role = "filter", params = {},
                                                         stdin = "", data = "data!" }).body)
        app:close()
    end)

    for _, case in ipairs({
        { "bad_return_number.lua", "returns a number" },
        { "bad_return_table.lua", "returns a table without a role handler" },
        { "bad_role_type.lua", "returns a role that is not a function" },
        { "bad_return_nothing.lua", "returns nothing" },
        { "syntax_error.lua", "has a syntax error" },
        { "top_error.lua", "raises an error at the top level" },
        { "no_such_file.lua", "does not exist" },
    }) do
        it("that " .. case[2] .. " makes test.load fail", function()
            local ok, err = pcall(test.load, APPS .. case[1])
            assert.is_false(ok)
            assert.is_string(err)
            assert.is_true(#err > 0)
        end)
    end

    it("that has a syntax error names the file and line in the error", function()
        local ok, err = pcall(test.load, APPS .. "syntax_error.lua")
        assert.is_false(ok)
        assert.matches("syntax_error%.lua:3:", err)
    end)

    it("that raises at the top level reports its message", function()
        local ok, err = pcall(test.load, APPS .. "top_error.lua")
        assert.is_false(ok)
        assert.matches("boom at the top level", err)
    end)
end)

describe("require in an app", function()
    it("finds modules in the app's folder first, then the system's paths", function()
        local saved = package.path
        package.loaded.api_spec_shadowed = nil
        package.path = APPS .. "elsewhere/?.lua;" .. package.path
        local ok, app = pcall(test.load, APPS .. "modpath/app.lua")
        package.path = saved
        assert(ok, app)
        local res = assert(app:request{ params = {} })
        local cjson = pcall(require, "cjson")
        assert.equal("app folder " .. tostring(cjson), res.body)
        app:close()
        package.loaded.api_spec_shadowed = nil
    end)
end)
