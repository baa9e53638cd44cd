-- Not an app: a role that is not a function.
return { respond = "hello" }
