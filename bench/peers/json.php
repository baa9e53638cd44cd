<?php
// The json workload on PHP-FPM: the same 50 records as bench/apps/json_payload.lua, built per
// request and encoded with json_encode.
$items = [];
for ($i = 1; $i <= 50; $i++) {
    $items[] = [
        'id' => $i,
        'name' => "item $i",
        'price' => $i * 1.25,
        'tags' => ['red', 'large'],
        'active' => $i % 2 == 0,
    ];
}
header('Content-Type: application/json');
echo json_encode(['count' => 50, 'items' => $items]);
