<?php
// The redis-get workload on PHP-FPM: php-redis with a persistent connection per child, GET
// one of 1,000 keys (?port=N is the bench's redis-server).
$r = new Redis();
$r->pconnect('127.0.0.1', (int)$_GET['port']);
header('Content-Type: text/plain');
echo $r->get('key:' . mt_rand(1, 1000));
