-- Not an app: it returns nothing.
local x = 1
