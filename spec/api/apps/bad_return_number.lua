-- Not an app: it returns a number.
return 42
