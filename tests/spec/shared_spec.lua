-- srv.shared through the in-process module: a key/value store of strings, numbers and booleans
-- with optional expiry (the same store the luasrv command keeps across hot reloads; see
-- reload_spec.lua for that part).
local srv = require "luasrv"

local shared = srv.shared

local function clear()
  for _, k in ipairs(shared.keys()) do shared.delete(k) end
end

local function sorted_keys()
  local keys = shared.keys()
  table.sort(keys)
  return keys
end

describe("srv.shared", function()
  before_each(clear)
  after_each(clear)

  it("gives back strings, integers, floats and booleans with their types", function()
    assert.is_true(shared.set("s", "hello\0world"))
    assert.is_true(shared.set("empty", ""))
    assert.is_true(shared.set("i", 42))
    assert.is_true(shared.set("big", math.maxinteger))
    assert.is_true(shared.set("f", 2.5))
    assert.is_true(shared.set("whole float", 3.0))
    assert.is_true(shared.set("inf", -math.huge))
    assert.is_true(shared.set("t", true))
    assert.is_true(shared.set("no", false))
    assert.is_true(shared.set("", "empty key"))
    assert.equal("hello\0world", shared.get("s"))
    assert.equal("", shared.get("empty"))
    assert.equal(42, shared.get("i"))
    assert.equal("integer", math.type(shared.get("i")))
    assert.equal(math.maxinteger, shared.get("big"))
    assert.equal(2.5, shared.get("f"))
    assert.equal("float", math.type(shared.get("whole float")))
    assert.equal(-math.huge, shared.get("inf"))
    assert.is_true(shared.get("t"))
    assert.is_false(shared.get("no"))
    assert.equal("empty key", shared.get(""))
    local nan = 0 / 0
    shared.set("nan", nan)
    local got = shared.get("nan")
    assert.is_true(got ~= got)
  end)

  it("answers nil for a key it does not hold", function()
    assert.is_nil(shared.get("missing"))
    shared.set("gone", 1)
    shared.delete("gone")
    assert.is_nil(shared.get("gone"))
  end)

  it("replaces a value, also with one of another type", function()
    shared.set("k", "a")
    shared.set("k", 5)
    assert.equal(5, shared.get("k"))
    shared.set("k", true)
    assert.is_true(shared.get("k"))
    shared.set("k", "b")
    assert.equal("b", shared.get("k"))
    assert.same({ "k" }, shared.keys())
  end)

  it("deletes with delete(key), which tells whether the key was there, and with set(key, nil)", function()
    shared.set("a", 1)
    shared.set("b", 2)
    assert.is_true(shared.delete("a"))
    assert.is_false(shared.delete("a"))
    assert.is_false(shared.delete("never"))
    assert.is_nil(shared.get("a"))
    assert.is_true(shared.set("b", nil))
    assert.is_nil(shared.get("b"))
    assert.same({}, shared.keys())
  end)

  it("lists every key once with keys(), also past a thousand of them", function()
    local want = {}
    for i = 1, 1000 do
      shared.set("key" .. i, i)
      want[#want + 1] = "key" .. i
    end
    table.sort(want)
    assert.same(want, sorted_keys())
    for i = 1, 1000 do assert.equal(i, shared.get("key" .. i)) end
    for i = 1, 1000, 2 do shared.delete("key" .. i) end
    assert.equal(500, #shared.keys())
    assert.is_nil(shared.get("key1"))
    assert.equal(2, shared.get("key2"))
  end)

  it("raises for a value it cannot hold and keeps the old value", function()
    shared.set("k", "old")
    local bad = { {}, function() end, coroutine.create(function() end), io.stdout }
    for _, v in ipairs(bad) do
      assert.has_error(function() shared.set("k", v) end,
        "bad argument #2 to 'set' (expected a string, number, boolean or nil)")
    end
    assert.equal("old", shared.get("k"))
  end)

  it("raises for a missing value and for a key that is not a string", function()
    assert.has_error(function() shared.set("k") end)
    assert.has_error(function() shared.set({}, 1) end)
    assert.has_error(function() shared.get() end)
    assert.has_error(function() shared.get({}) end)
    assert.has_error(function() shared.delete(nil) end)
    assert.has_error(function() shared.incr(true) end)
    assert.same({}, shared.keys())
  end)

  it("counts with incr: from 0, by 1 or a given step, or from an initial value", function()
    assert.equal(1, shared.incr("c"))
    assert.equal("integer", math.type(shared.get("c")))
    assert.equal(2, shared.incr("c"))
    assert.equal(12, shared.incr("c", 10))
    assert.equal(10, shared.incr("c", -2))
    assert.equal(10.5, shared.incr("c", 0.5))
    assert.equal(10.5, shared.get("c"))
    assert.equal(101, shared.incr("d", 1, 100))
    assert.equal(102, shared.incr("d", 1, 100))
    assert.equal(0.5, shared.incr("e", 0.5))
    assert.equal("float", math.type(shared.get("e")))
  end)

  it("does not incr a value that is not a number, and raises for a step that is not one", function()
    shared.set("s", "abc")
    shared.set("b", true)
    local v, err = shared.incr("s")
    assert.is_nil(v)
    assert.equal("not a number", err)
    v, err = shared.incr("b", 2)
    assert.is_nil(v)
    assert.equal("not a number", err)
    assert.equal("abc", shared.get("s"))
    assert.is_true(shared.get("b"))
    assert.has_error(function() shared.incr("n", "abc") end)
    assert.has_error(function() shared.incr("n", {}) end)
    assert.has_error(function() shared.incr("n", 1, "x") end)
    assert.is_nil(shared.get("n"))
  end)

  it("expires a value after its ttl, from get and from keys", function()
    srv.run(function()
      shared.set("short", "v", 0.05)
      shared.set("forever", "v", 0)
      shared.set("plain", "v")
      assert.equal("v", shared.get("short"))
      assert.same({ "forever", "plain", "short" }, sorted_keys())
      srv.sleep(0.1)
      assert.is_nil(shared.get("short"))
      assert.same({ "forever", "plain" }, sorted_keys())
      assert.equal("v", shared.get("forever"))
    end)
  end)

  it("drops the ttl when a value is set again without one", function()
    srv.run(function()
      shared.set("k", "v", 0.05)
      shared.set("k", "w")
      srv.sleep(0.1)
      assert.equal("w", shared.get("k"))
    end)
  end)

  it("raises for a negative or NaN ttl", function()
    assert.has_error(function() shared.set("k", "v", -1) end)
    assert.has_error(function() shared.set("k", "v", 0 / 0) end)
    assert.has_error(function() shared.set("k", "v", "soon") end)
    assert.is_nil(shared.get("k"))
  end)

  it("keeps a value with a very long ttl", function()
    srv.run(function()
      shared.set("year", "v", 365 * 24 * 3600)
      shared.set("huge", "v", 1e300)
      shared.set("inf", "v", math.huge)
      srv.sleep(0.02)
      assert.equal("v", shared.get("year"))
      assert.equal("v", shared.get("huge"), "a ttl of 1e300 s expired at once")
      assert.equal("v", shared.get("inf"), "a ttl of math.huge expired at once")
    end)
  end)

  it("counts a ttl from the moment of set, also when the loop has not run for a while", function()
    srv.run(function() srv.sleep(0) end)
    os.execute("sleep 0.3") -- time passes while no loop runs
    shared.set("late", "v", 0.2)
    assert.equal("v", shared.get("late"))
    srv.run(function() srv.sleep(0.01) end)
    assert.equal("v", shared.get("late"), "a ttl of 0.2 s ran out 10 ms after set")
    os.execute("sleep 0.3")
    assert.is_nil(shared.get("late"), "a ttl of 0.2 s had not run out after 0.3 s")
  end)
end)
