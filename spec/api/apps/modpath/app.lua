-- Requires a module by a name that also exists elsewhere on package.path: the one in this
-- folder must win (docs/api.md, "The app file").
local shadowed = require "api_spec_shadowed"
local cjson_ok = pcall(require, "cjson")
return function(req)
    req:write(shadowed.where, " ", tostring(cjson_ok))
end
