-- The chat (WebSocket) and clock (Server-Sent Events) examples in headless Chromium, driven
-- over the DevTools protocol (tests/fixtures/cdp.py): two chat pages talk to each other through
-- a server with two workers, the clock page counts the server's ticks; screenshots are taken
-- and checked to be real pages (PNG, size, and not blank).
local helper = require "helper"
local W = require "ws_helper"

-- Runs an async Python body with the driver at hand (Browser, png_check, BASE, SHOTS);
-- returns what it returns.
local function browse(base, shots, body)
  local head = ([[
import asyncio, json, sys
sys.path.insert(0, %q)
from cdp import Browser, png_check

BASE, SHOTS = sys.argv[1], sys.argv[2]

async def main():]]):format(helper.path("tests/fixtures"))
  return W.python(head, body, "print(json.dumps(asyncio.run(asyncio.wait_for(main(), 90))))",
    base .. " " .. shots)
end

describe("examples in headless Chromium", function()
  local shots

  setup(function()
    shots = helper.tmpname("-shots")
    os.execute("mkdir -p " .. shots)
  end)
  teardown(function()
    os.execute("rm -rf " .. helper.shell_quote(shots))
  end)

  it("examples/chat.lua: two pages exchange messages", function()
    local server = helper.start(helper.path("examples/chat.lua"),
      { flags = { "--workers", "2" }, args = { "0" } })
    local ok, r = pcall(browse, server.url, shots, [[
async with Browser() as b:
    connected = "document.getElementById('status').textContent.startsWith('connected')"
    log = "document.getElementById('log').innerText"
    alice = await b.open(BASE + "/chat.html?name=alice")
    await alice.wait_for(connected)
    bob = await b.open(BASE + "/chat.html?name=bob")
    await bob.wait_for(connected)
    await alice.wait_for(log + ".includes('bob joined')")
    await alice.eval("document.getElementById('text').value = 'hello from alice';"
                     "document.querySelector('button').click(); true")
    await bob.wait_for(log + ".includes('alice: hello from alice')")
    await bob.eval("document.getElementById('text').value = 'hi alice, bob here';"
                   "document.querySelector('button').click(); true")
    await alice.wait_for(log + ".includes('bob: hi alice, bob here')")
    await bob.wait_for(log + ".includes('bob: hi alice, bob here')")
    shot_a = png_check(await alice.screenshot(SHOTS + "/chat-alice.png"))
    shot_b = png_check(await bob.screenshot(SHOTS + "/chat-bob.png"))
    return {"alice": await alice.eval(log), "bob": await bob.eval(log), "shots": [shot_a, shot_b]}
]])
    server:cleanup()
    assert(ok, r)
    assert.matches("alice: hello from alice.*bob: hi alice, bob here", r.alice)
    assert.matches("bob joined.*alice: hello from alice.*bob: hi alice, bob here", r.bob)
    for _, shot in ipairs(r.shots) do
      assert.equal(900, shot[1]) -- --window-size=900,700, less the window's frame in height
      assert.is_true(shot[2] > 400)
      assert.is_true(shot[3] > 20, "the screenshot looks blank")
    end
  end)

  it("examples/clock_sse.lua: the page shows the server's ticks", function()
    local server = helper.start(helper.path("examples/clock_sse.lua"), { args = { "0" } })
    local ok, r = pcall(browse, server.url, shots, [[
async with Browser() as b:
    page = await b.open(BASE + "/")
    await page.wait_for("document.getElementById('info').textContent.includes('(3 received)')", 15)
    shot = png_check(await page.screenshot(SHOTS + "/clock.png"))
    return {"clock": await page.eval("document.getElementById('clock').textContent"),
            "info": await page.eval("document.getElementById('info').textContent"), "shot": shot}
]])
    server:cleanup()
    assert(ok, r)
    assert.matches("^%d%d:%d%d:%d%d UTC$", r.clock)
    assert.matches("tick %d+ %(3 received%)", r.info)
    assert.is_true(r.shot[3] > 20, "the screenshot looks blank")
  end)
end)
