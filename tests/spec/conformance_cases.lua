--- The HTTP/1.1 conformance table: raw requests, what RFC 9110/9112 (or, where they leave a
-- choice, this project) expects, and what nginx 1.22 (Debian 12) answered with `return 200`
-- when recorded with bench/conformance.lua. Used by tests/spec/http_conformance_spec.lua and
-- by docs/conformance.md. Not a spec itself.
--
-- Each case: name; send (a string, or a list of pieces sent one at a time); want (the
-- statuses of the responses in order); close (true: the server must close after them;
-- false: it must keep the connection open; nil: either); body (a pattern the last response
-- must contain); rfc (the section); nginx (its statuses, recorded).
local H = "Host: t\r\n"

local function bytes(s)
  local t = {}
  for i = 1, #s do t[i] = s:sub(i, i) end
  return t
end

local CL_GET = "GET / HTTP/1.1\r\n" .. H .. "\r\n"
local big = ("x"):rep(7000)

return {
  -- ---- request line ------------------------------------------------------------------------
  { name = "simple GET", send = CL_GET, want = { 200 }, close = false, rfc = "9112 §3", nginx = { 200 } },
  { name = "request line sent byte by byte", send = bytes(CL_GET), want = { 200 }, rfc = "9112 §3",
    nginx = { 200 } },
  { name = "empty line before the request line", send = "\r\n" .. CL_GET, want = { 200 },
    rfc = "9112 §2.2 (SHOULD ignore)", nginx = { 200 } },
  { name = "lower-case method (get)", send = "get / HTTP/1.1\r\n" .. H .. "\r\n", want = { 501 },
    close = true, rfc = "9110 §9.1 (case-sensitive: unknown method, 501)", nginx = { 400 } },
  { name = "unknown method FROB", send = "FROB / HTTP/1.1\r\n" .. H .. "\r\n", want = { 501 },
    close = true, rfc = "9110 §9.1 (501)", nginx = { 200 } },
  { name = "CONNECT", send = "CONNECT t:443 HTTP/1.1\r\n" .. H .. "\r\n", want = { 501 },
    close = true, rfc = "9110 §9.3.6 (not a proxy)", nginx = { 400 } },
  { name = "HTTP/1.0 without Host", send = "GET / HTTP/1.0\r\n\r\n", want = { 200 }, close = true,
    rfc = "9112 §3.2 (Host required in 1.1 only)", nginx = { 200 } },
  { name = "HTTP/1.1 without Host", send = "GET / HTTP/1.1\r\n\r\n", want = { 400 }, close = true,
    rfc = "9112 §3.2 (MUST 400)", nginx = { 400 } },
  { name = "HTTP/1.2", send = "GET / HTTP/1.2\r\n" .. H .. "\r\n", want = { 400 }, close = true,
    rfc = "9112 §2.3 (strict: refuse)", nginx = { 200 } },
  { name = "HTTP/2.0 request line", send = "GET / HTTP/2.0\r\n" .. H .. "\r\n", want = { 505 },
    close = true, rfc = "9110 §15.6.6", nginx = { 505 } },
  { name = "HTTP/2 connection preface", send = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want = { 505 },
    close = true, rfc = "9113 §3.4 (no h2 on this port)", nginx = { 400 } },
  { name = "HTTP/0.9 request (no version)", send = "GET /\r\n\r\n", want = { 505 }, close = true,
    rfc = "9110 §15.6.6 (0.9 not supported: 505)", nginx = {} },
  { name = "two spaces in the request line", send = "GET  / HTTP/1.1\r\n" .. H .. "\r\n",
    want = { 200 }, rfc = "9112 §3 (MAY parse on whitespace)", nginx = { 200 } },
  { name = "tab in the request line", send = "GET\t/ HTTP/1.1\r\n" .. H .. "\r\n", want = { 400 },
    close = true, rfc = "9112 §3", nginx = { 400 } },
  { name = "absolute-form target", send = "GET http://t/abs?q=1 HTTP/1.1\r\n" .. H .. "\r\n",
    want = { 200 }, body = "ok GET /abs ", rfc = "9112 §3.2.2 (MUST accept)", nginx = { 200 } },
  { name = "OPTIONS *", send = "OPTIONS * HTTP/1.1\r\n" .. H .. "\r\n", want = { 200 },
    rfc = "9112 §3.2.4", nginx = { 400 } },
  { name = "asterisk-form with GET", send = "GET * HTTP/1.1\r\n" .. H .. "\r\n", want = { 400 },
    close = true, rfc = "9112 §3.2.4 (OPTIONS only)", nginx = { 400 } },
  { name = "fragment in the target", send = "GET /a#frag HTTP/1.1\r\n" .. H .. "\r\n",
    want = { 200 }, body = "ok GET /a ", rfc = "9112 §3.2 (no fragment: ignored)", nginx = { 200 } },
  { name = "7 KiB target (below max_line)", send = "GET /" .. big .. " HTTP/1.1\r\n" .. H .. "\r\n",
    want = { 200 }, rfc = "9112 §3 (8000 octets RECOMMENDED)", nginx = { 200 } },
  { name = "9 KiB target (above max_line)", send = "GET /" .. ("y"):rep(9000) .. " HTTP/1.1\r\n" ..
    H .. "\r\n", want = { 414 }, close = true, rfc = "9110 §15.5.15", nginx = { 414 } },
  { name = "percent-encoded path", send = "GET /%41%20b HTTP/1.1\r\n" .. H .. "\r\n", want = { 200 },
    body = "ok GET /A b ", rfc = "3986 §2.1", nginx = { 200 } },
  { name = "malformed percent escape", send = "GET /%zz HTTP/1.1\r\n" .. H .. "\r\n",
    want = { 400 }, close = true, rfc = "3986 §2.1", nginx = { 400 } },
  { name = "percent-encoded NUL", send = "GET /a%00b HTTP/1.1\r\n" .. H .. "\r\n", want = { 400 },
    close = true, rfc = "(refused: NUL in a path)", nginx = { 400 } },
  { name = "dot segments in the path", send = "GET /a/../b HTTP/1.1\r\n" .. H .. "\r\n",
    want = { 200 }, rfc = "3986 §5.2.4 (the app normalises)", nginx = { 200 } },
  { name = "control byte in the target", send = "GET /a\1b HTTP/1.1\r\n" .. H .. "\r\n",
    want = { 400 }, close = true, rfc = "9112 §3.2", nginx = { 400 } },

  -- ---- header fields -----------------------------------------------------------------------
  { name = "header section sent byte by byte",
    send = bytes("GET / HTTP/1.1\r\n" .. H .. "X-Test: split\r\n\r\n"), want = { 200 },
    body = "%[split%]", rfc = "9112 §5", nginx = { 200 } },
  { name = "field name in odd case", send = "GET / HTTP/1.1\r\n" .. H .. "x-TeSt: v\r\n\r\n",
    want = { 200 }, body = "%[v%]", rfc = "9110 §5.1 (case-insensitive)", nginx = { 200 } },
  { name = "spaces and tabs around a value", send = "GET / HTTP/1.1\r\n" .. H .. "X-Test: \t v w \t\r\n\r\n",
    want = { 200 }, body = "%[v w%]", rfc = "9112 §5 (OWS not part of the value)", nginx = { 200 } },
  { name = "whitespace before the colon", send = "GET / HTTP/1.1\r\n" .. H .. "X-Test : v\r\n\r\n",
    want = { 400 }, close = true, rfc = "9112 §5.1 (MUST 400)", nginx = { 400 } },
  { name = "obsolete line folding", send = "GET / HTTP/1.1\r\n" .. H .. "X-Test: a\r\n b\r\n\r\n",
    want = { 400 }, close = true, rfc = "9112 §5.2 (MAY reject with 400)", nginx = { 400 } },
  { name = "bare LF line ends", send = "GET / HTTP/1.1\n" .. H:gsub("\r", "") .. "\n",
    want = { 400 }, close = true, rfc = "9112 §2.2 (MAY accept; strict here)", nginx = { 200 } },
  { name = "empty field value", send = "GET / HTTP/1.1\r\n" .. H .. "X-Test:\r\n\r\n", want = { 200 },
    body = "%[%]", rfc = "9110 §5.5 (allowed)", nginx = { 200 } },
  { name = "empty field name", send = "GET / HTTP/1.1\r\n" .. H .. ": v\r\n\r\n", want = { 400 },
    close = true, rfc = "9110 §5.1 (token, 1+ chars)", nginx = { 400 } },
  { name = "non-token character in a name", send = "GET / HTTP/1.1\r\n" .. H .. "X(y): v\r\n\r\n",
    want = { 400 }, close = true, rfc = "9110 §5.1", nginx = { 200 } },
  { name = "NUL in a value", send = "GET / HTTP/1.1\r\n" .. H .. "X-Test: a\0b\r\n\r\n",
    want = { 400 }, close = true, rfc = "9110 §5.5 (MUST reject or replace)", nginx = { 400 } },
  { name = "bare CR in a value", send = "GET / HTTP/1.1\r\n" .. H .. "X-Test: a\rb\r\n\r\n",
    want = { 400 }, close = true, rfc = "9112 §2.2 (MUST reject or replace)", nginx = { 400 } },
  { name = "Host with a space inside", send = "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", want = { 400 },
    close = true, rfc = "9110 §7.2 (MUST 400 an invalid Host)", nginx = { 400 } },
  { name = "Host with a path", send = "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", want = { 400 },
    close = true, rfc = "9110 §7.2 (MUST 400 an invalid Host)", nginx = { 400 } },
  { name = "Host as an IPv6 literal with a port", send = "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    want = { 200 }, rfc = "3986 §3.2.2", nginx = { 200 } },
  { name = "Host with trailing blanks", send = "GET / HTTP/1.1\r\nHost: t:80 \t\r\n\r\n",
    want = { 200 }, rfc = "9112 §5.1 (OWS trimmed)", nginx = { 400 } },
  { name = "empty Host", send = "GET / HTTP/1.1\r\nHost:\r\n\r\n", want = { 200 },
    rfc = "9110 §7.2 (empty when the target has no authority)", nginx = { 400 } },
  { name = "two Host fields", send = "GET / HTTP/1.1\r\n" .. H .. H .. "\r\n", want = { 400 },
    close = true, rfc = "9112 §3.2 (MUST 400)", nginx = { 400 } },
  { name = "an 8000-byte value", send = "GET / HTTP/1.1\r\n" .. H .. "X-Long: " .. ("v"):rep(8000) ..
    "\r\n\r\n", want = { 200 }, rfc = "9110 §5.4 (no limit set)", nginx = { 200 } },
  { name = "100 fields (max_headers)", send = "GET / HTTP/1.1\r\n" .. H .. ("X-A: b\r\n"):rep(99) ..
    "\r\n", want = { 200 }, rfc = "9110 §5.4", nginx = { 200 } },
  { name = "101 fields", send = "GET / HTTP/1.1\r\n" .. H .. ("X-A: b\r\n"):rep(100) .. "\r\n",
    want = { 431 }, close = true, rfc = "6585 §5", nginx = { 200 } },
  { name = "header section over 16 KiB", send = "GET / HTTP/1.1\r\n" .. H .. ("X-A: " ..
    ("b"):rep(1000) .. "\r\n"):rep(17) .. "\r\n", want = { 431 }, close = true, rfc = "6585 §5",
    nginx = { 200 } },

  -- ---- message framing ---------------------------------------------------------------------
  { name = "Content-Length body", send = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: 5\r\n\r\nhello",
    want = { 200 }, body = " 5\n", close = false, rfc = "9112 §6.2", nginx = { 200 } },
  { name = "the same Content-Length twice", send = "POST / HTTP/1.1\r\n" .. H ..
    "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", want = { 400 }, close = true,
    rfc = "9110 §8.6 (MAY accept; strict here)", nginx = { 400 } },
  { name = "two different Content-Lengths", send = "POST / HTTP/1.1\r\n" .. H ..
    "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", want = { 400 }, close = true,
    rfc = "9112 §6.3 (MUST 400)", nginx = { 400 } },
  { name = "signed Content-Length", send = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: +5\r\n\r\nhello",
    want = { 400 }, close = true, rfc = "9110 §8.6 (1*DIGIT)", nginx = { 400 } },
  { name = "non-numeric Content-Length", send = "POST / HTTP/1.1\r\n" .. H .. "Content-Length: five\r\n\r\n",
    want = { 400 }, close = true, rfc = "9112 §6.3", nginx = { 400 } },
  { name = "Content-Length beyond 64 bits", send = "POST / HTTP/1.1\r\n" .. H ..
    "Content-Length: 99999999999999999999\r\n\r\n", want = { 400 }, close = true,
    rfc = "9112 §6.3", nginx = { 400 } },
  { name = "Content-Length over max_body", send = "POST / HTTP/1.1\r\n" .. H ..
    "Content-Length: 2000000\r\n\r\n", want = { 413 }, close = true, rfc = "9110 §15.5.14",
    nginx = { 413 } },
  { name = "Content-Length and Transfer-Encoding", send = "POST / HTTP/1.1\r\n" .. H ..
    "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want = { 400 },
    close = true, rfc = "9112 §6.1 (MAY reject; smuggling)", nginx = { 400 } },
  { name = "chunked body", send = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n" ..
    "3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n", want = { 200 }, body = " 13\n", close = false,
    rfc = "9112 §7.1", nginx = { 200 } },
  { name = "several chunk extensions", send = "POST / HTTP/1.1\r\n" .. H ..
    "Transfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d;e\";f\r\nabc\r\n0\r\n\r\n", want = { 200 },
    body = " 3\n", rfc = "9112 §7.1.1 (any number)", nginx = { 200 } },
  { name = "trailer fields", send = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n" ..
    "3\r\nabc\r\n0\r\nX-Trailer: v\r\n\r\n", want = { 200 }, body = " 3\n", rfc = "9112 §7.1.2",
    nginx = { 200 } },
  { name = "chunked not last", send = "POST / HTTP/1.1\r\n" .. H ..
    "Transfer-Encoding: chunked, gzip\r\n\r\n", want = { 400 }, close = true,
    rfc = "9112 §6.3 (MUST 400)", nginx = { 501 } },
  { name = "Transfer-Encoding: gzip alone", send = "POST / HTTP/1.1\r\n" .. H ..
    "Transfer-Encoding: gzip\r\n\r\n", want = { 400 }, close = true, rfc = "9112 §6.3 (MUST 400)",
    nginx = { 501 } },
  { name = "gzip, chunked", send = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: gzip, chunked\r\n\r\n" ..
    "3\r\nabc\r\n0\r\n\r\n", want = { 501 }, close = true, rfc = "9112 §6.1 (SHOULD 501)",
    nginx = { 501 } },
  { name = "identity, chunked", send = "POST / HTTP/1.1\r\n" .. H ..
    "Transfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", want = { 501 },
    close = true, rfc = "9112 §6.1 (identity is no coding: 501)", nginx = { 501 } },
  { name = "chunked twice", send = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n" ..
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want = { 400 }, close = true,
    rfc = "9112 §7 (MUST NOT apply twice)", nginx = { 400 } },
  { name = "Transfer-Encoding in HTTP/1.0", send = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" ..
    "3\r\nabc\r\n0\r\n\r\n", want = { 400 }, close = true, rfc = "9112 §6.1 (smuggling)",
    nginx = { 400 } },
  { name = "bad chunk size", send = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n" ..
    "xyz\r\nabc\r\n0\r\n\r\n", want = { 400 }, close = true, rfc = "9112 §7.1", nginx = { 400 } },
  { name = "chunk size overflow", send = "POST / HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n" ..
    "fffffffffffffffff\r\nabc\r\n", want = { 400 }, close = true, rfc = "9112 §7.1", nginx = { 400 } },
  { name = "chunk longer than its size", send = "POST / HTTP/1.1\r\n" .. H ..
    "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", want = { 400 }, close = true,
    rfc = "9112 §7.1", nginx = { 400 } },
  { name = "malformed chunk extension", send = "POST / HTTP/1.1\r\n" .. H ..
    "Transfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n0\r\n\r\n", want = { 400 }, close = true,
    rfc = "9112 §7.1.1", nginx = { 200 } },

  -- ---- pipelining and connections ----------------------------------------------------------
  { name = "three GETs in one write", send = CL_GET:rep(3), want = { 200, 200, 200 }, close = false,
    rfc = "9112 §9.3.2", nginx = { 200, 200, 200 } },
  { name = "POST with a body, then GET, in one write", send = "POST / HTTP/1.1\r\n" .. H ..
    "Content-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n" .. H .. "\r\n", want = { 200, 200 },
    rfc = "9112 §9.3.2", nginx = { 200, 200 } },
  { name = "a bad request between two good ones", send = CL_GET .. "GET / HTTP/1.1\r\n\r\n" .. CL_GET,
    want = { 200, 400 }, close = true, rfc = "9112 §9.3.2 (nothing parsed after an error)",
    nginx = { 200, 400 } },
  { name = "garbage after a valid request", send = CL_GET .. "\22\3\1garbage\r\n\r\n",
    want = { 200, 400 }, close = true, rfc = "9112 §2.2", nginx = { 200, 400 } },
  { name = "TLS ClientHello on the plain port", send = "\22\3\1\2\0\1\0\1\252\3\3" .. ("x"):rep(40),
    want = { 400 }, close = true, rfc = "9112 §2.2", nginx = { 400 } },
  { name = "HTTP/1.0 keep-alive", send = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    want = { 200 }, close = false, rfc = "9112 §9.3 (appendix C.2.2)", nginx = { 200 } },
  { name = "HTTP/1.0 without keep-alive", send = "GET / HTTP/1.0\r\n\r\n", want = { 200 },
    close = true, rfc = "9112 §9.3", nginx = { 200 } },
  { name = "Connection: close", send = "GET / HTTP/1.1\r\n" .. H .. "Connection: close\r\n\r\n",
    want = { 200 }, close = true, rfc = "9112 §9.6", nginx = { 200 } },
  { name = "Upgrade: h2c not taken, then another request", send = "GET / HTTP/1.1\r\n" .. H ..
    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" ..
    CL_GET, want = { 200, 200 }, close = false, rfc = "9110 §7.8 (MAY ignore)", nginx = { 200, 200 } },
  { name = "Expect: 100-continue", send = "POST / HTTP/1.1\r\n" .. H .. "Expect: 100-continue\r\n" ..
    "Content-Length: 3\r\n\r\nabc", want = { 100, 200 }, rfc = "9110 §10.1.1", nginx = { 100, 200 } },
  { name = "unknown expectation", send = "GET / HTTP/1.1\r\n" .. H .. "Expect: magic\r\n\r\n",
    want = { 417 }, close = true, rfc = "9110 §10.1.1 (MAY 417)", nginx = { 200 } },
  { name = "HEAD has no body", send = "HEAD / HTTP/1.1\r\n" .. H .. "\r\n", want = { 200 },
    head = true, close = false, rfc = "9110 §9.3.2", nginx = { 200 } },
}
