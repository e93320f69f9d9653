-- Server-Sent Events: res:sse() read with curl (an independent client) and a raw socket.
local srv = require "luasrv"
local helper = require "helper"

describe("res:sse()", function()
  local server

  setup(function()
    server = helper.start(helper.path("tests/fixtures/sse_app.lua"), { args = { "0" } })
  end)
  teardown(function()
    if server then server:cleanup() end
  end)

  local function curl(path, extra)
    return helper.capture(("curl -sS -N -i --max-time 5 %s http://127.0.0.1:%d%s"):format(
      extra or "", server.port, path))
  end

  it("sends the head of an event stream", function()
    local out = curl("/events")
    assert.matches("^HTTP/1.1 200", out)
    assert.matches("\r\nContent%-Type: text/event%-stream; charset=utf%-8\r\n", out)
    assert.matches("\r\nCache%-Control: no%-cache\r\n", out)
    assert.matches("\r\nTransfer%-Encoding: chunked\r\n", out)
  end)

  it("formats events, multi-line data, comments and retry", function()
    local body = curl("/events"):match("\r\n\r\n(.*)$")
    assert.equal(table.concat({
      "event: greeting\nid: 1\ndata: hello\n\n",
      "data: line one\ndata: line two\ndata: line three\n\n",
      ": heartbeat\n\n",
      "retry: 2500\n\n",
      "data: plain string\n\n",
      "event: last\nid: 3\ndata: \n\n",
    }), body)
  end)

  it("lets the handler read Last-Event-ID", function()
    local body = curl("/resume", "-H 'Last-Event-ID: 42'"):match("\r\n\r\n(.*)$")
    assert.equal("event: resumed\ndata: 42\n\n", body)
    body = curl("/resume"):match("\r\n\r\n(.*)$")
    assert.equal("event: resumed\ndata: (none)\n\n", body)
  end)

  it("refuses a field value that would break the stream", function()
    local body = curl("/bad"):match("\r\n\r\n(.*)$")
    assert.equal("data: sse: event must not contain CR or LF\n\n", body)
  end)

  it("tells the handler when the client has gone", function()
    srv.run(function()
      local conn = assert(srv.tcp.connect("127.0.0.1", server.port))
      conn:settimeout(5)
      conn:write("GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
      local seen = ""
      while not seen:find("started", 1, true) do seen = seen .. assert(conn:read()) end
      conn:close()
      local deadline = srv.monotime() + 5
      local answer
      repeat
        srv.sleep(0.05)
        local c = assert(srv.tcp.connect("127.0.0.1", server.port))
        c:settimeout(5)
        c:write("GET /gone HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = c:read("a")
        c:close()
      until answer:find("send failed", 1, true) or srv.monotime() > deadline
      assert.matches("send failed: %a", answer) -- "broken pipe", "closed"
    end)
  end)
end)
