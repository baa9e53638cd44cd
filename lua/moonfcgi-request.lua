-- The script behind the moonfcgi-request command (see lua/moonfcgi/request_cli.lua).
os.exit(require("moonfcgi.request_cli").main(arg))
