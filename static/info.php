<?php
// What PHP sees of the request (the FastCGI params cgihost sends).
header("Content-Type: text/html; charset=utf-8");
$rows = "";
foreach ($_SERVER as $k => $v) {
    if (is_scalar($v)) $rows .= "<tr><td>" . htmlspecialchars($k) . "</td><td>" . htmlspecialchars((string)$v) . "</td></tr>\n";
}
?><!DOCTYPE html>
<title>PHP <?= PHP_VERSION ?> via cgihost</title>
<style>body{font:15px system-ui,sans-serif;margin:2em}td{padding:.2em .6em;border-bottom:1px solid #ddd;font-family:monospace}</style>
<h1>PHP <?= PHP_VERSION ?> (<?= php_sapi_name() ?>) via cgihost</h1>
<table><?= $rows ?></table>
