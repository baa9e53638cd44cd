-- Not an app: a table without any role handler.
return { respnd = function() end }
