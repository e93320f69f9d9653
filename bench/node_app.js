// The Node.js peer of scripts/bench: the handlers of bench/bench_app.lua (and https_app.lua,
// examples/hello_http.lua) written as Node users write them, on plain
// http.createServer / https.createServer, no framework. Same bodies, same Content-Types.
//   GET /            "Hello from <Host> (<method>)\n", text/plain
//   GET /users/:id   {"fields":<query fields>,"id":<id>,"name":"user"}, application/json
//   GET /1k.txt      --file: the file read once at startup, with an ETag (304 on If-None-Match)
//   GET /20k.html    --file --gzip: the same, gzipped at level 6 when Accept-Encoding has gzip
//   --smallest       every path: "hello world", text/html; charset=utf-8
//
// Usage: node bench/node_app.js [PORT] [--smallest] [--file PATH [--gzip]]
//                               [--cert PEM --key PEM [--no-resumption]] [--workers N]
//   PORT 0 (the default): the OS picks. Listens on 127.0.0.1 and prints
//   "listening on http://127.0.0.1:PORT" (https:// with --cert) once it accepts connections.
//   --no-resumption   no session tickets (and no session cache: Node keeps none unless asked),
//                     so every new TLS connection is a full handshake
//   --workers N       node:cluster with N worker processes; the primary accepts and hands
//                     connections out (Node's default scheduling on Linux, round-robin)
// The keep-alive timeout is 75 s, as nginx's keepalive_timeout in scripts/bench (Node's
// default, 5 s, would close idle connections that the other servers keep).
'use strict';
const cluster = require('node:cluster');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const zlib = require('node:zlib');

function usage(msg) {
  process.stderr.write(`node_app.js: ${msg}\n`);
  process.exit(2);
}

const opts = { port: 0, workers: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
  if (a === '--smallest') opts.smallest = true;
  else if (a === '--gzip') opts.gzip = true;
  else if (a === '--no-resumption') opts.noResumption = true;
  else if (a === '--file') opts.file = value();
  else if (a === '--cert') opts.cert = value();
  else if (a === '--key') opts.key = value();
  else if (a === '--workers') opts.workers = Number(value());
  else if (/^\d+$/.test(a)) opts.port = Number(a);
  else usage(`unknown argument '${a}'`);
}
if (!Number.isInteger(opts.workers) || opts.workers < 0) usage('--workers takes a whole number');
const scheme = opts.cert ? 'https' : 'http';

if (opts.workers > 0 && cluster.isPrimary) {
  // The primary prints the line once every worker listens (all on the same port).
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening === opts.workers) {
      process.stdout.write(`listening on ${scheme}://127.0.0.1:${address.port}\n`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    process.stderr.write(`node_app.js: worker ${worker.process.pid} exited (${signal || code})\n`);
  });
  for (let i = 0; i < opts.workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const id in cluster.workers) cluster.workers[id].kill();
    process.exit(0);
  });
} else {
  serve();
}

function serve() {
  let body, etag;
  if (opts.file) {
    body = fs.readFileSync(opts.file);
    etag = `"${body.length.toString(16)}-1"`;
  }

  // res.end(data) after writeHead without a Content-Length sends the body chunked: every
  // peer here sends a Content-Length, so the handlers give it.
  function handler(req, res) {
    if (opts.smallest) {
      const text = 'hello world';
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8',
                           'Content-Length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (req.url === '/') {
      const host = req.headers.host || 'unknown';
      const text = `Hello from ${host} (${req.method})\n`;
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    const m = /^\/users\/([^/?]+)(?:\?(.*))?$/.exec(req.url);
    if (m) {
      const query = new URLSearchParams(m[2] || '');
      const user = { fields: query.get('fields') ?? undefined, id: decodeURIComponent(m[1]),
                     name: 'user' };
      const text = JSON.stringify(user);
      res.writeHead(200, { 'Content-Type': 'application/json',
                           'Content-Length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (body && (req.url === '/1k.txt' || req.url === '/20k.html')) {
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { ETag: etag });
        res.end();
        return;
      }
      if (opts.gzip && /\bgzip\b/.test(req.headers['accept-encoding'] || '')) {
        const gzipped = zlib.gzipSync(body, { level: 6 });
        res.writeHead(200, { 'Content-Type': 'text/html', ETag: etag, 'Content-Encoding': 'gzip',
                             Vary: 'Accept-Encoding', 'Content-Length': gzipped.length });
        res.end(gzipped);
        return;
      }
      res.writeHead(200, { 'Content-Type': opts.gzip ? 'text/html' : 'text/plain', ETag: etag,
                           'Content-Length': body.length });
      res.end(body);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  }

  let server;
  if (opts.cert) {
    const tls = { cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key || usage('--cert needs --key')) };
    if (opts.noResumption) tls.secureOptions = crypto.constants.SSL_OP_NO_TICKET;
    server = https.createServer(tls, handler);
  } else {
    server = http.createServer(handler);
  }
  server.keepAliveTimeout = 75000;
  server.headersTimeout = 76000;
  server.listen(opts.port, '127.0.0.1', () => {
    if (cluster.isPrimary) {
      process.stdout.write(`listening on ${scheme}://127.0.0.1:${server.address().port}\n`);
    }
  });
}
