<?php
// The PHP-FPM peer of moonfcgi's benchmarks: the same answer as the C peers, so the figures
// compare the FastCGI servers rather than the work done per request. PHP sends no Status
// header for 200; mf-bench counts a missing Status as 200.
header('Content-Type: text/plain');
echo "Hello, world!\n";
