<?php
// Uploads two ways: a form (multipart, $_FILES) or a raw body
// (curl -T file http://HOST:8992/upload.php), streamed from php://input.
header("Content-Type: text/plain; charset=utf-8");
if ($_SERVER['REQUEST_METHOD'] === 'GET') {
    header("Content-Type: text/html; charset=utf-8");
    echo '<!DOCTYPE html><title>upload</title><form method="post" enctype="multipart/form-data">',
         '<input type="file" name="file"> <button>upload</button></form>';
    exit;
}
if (!empty($_FILES)) {
    foreach ($_FILES as $name => $f) {
        printf("%s: %s, %d bytes, sha256 %s\n", $name, $f['name'], $f['size'],
               $f['error'] ? "error {$f['error']}" : hash_file('sha256', $f['tmp_name']));
    }
    exit;
}
$h = hash_init('sha256');
$in = fopen('php://input', 'rb');
$n = 0;
while (!feof($in)) {
    $chunk = fread($in, 1 << 16);
    if ($chunk === false) break;
    $n += strlen($chunk);
    hash_update($h, $chunk);
}
printf("bytes=%d\nsha256=%s\n", $n, hash_final($h));
