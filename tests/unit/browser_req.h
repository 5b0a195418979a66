/*
 * A typical browser request head (a script fetched by a preview page),
 * shared by the HTTP parser's unit test and its benchmark.
 */
#ifndef SBX_TESTS_BROWSER_REQ_H
#define SBX_TESTS_BROWSER_REQ_H

static const char browser_req[] =
    "GET /static/app.js?v=3f9c2a HTTP/1.1\r\n"
    "Host: 01hzx3k4m5n6p7q8r9s0t1v2w3.preview.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 "
    "Firefox/121.0\r\n"
    "Accept: */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Referer: https://01hzx3k4m5n6p7q8r9s0t1v2w3.preview.example.com/\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=7d1f0c2b9e8a4d3c\r\n"
    "Sec-Fetch-Dest: script\r\n"
    "Sec-Fetch-Mode: no-cors\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "\r\n";

#endif
