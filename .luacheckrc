-- luacheck configuration: `luacheck examples tests/spec`.
std = "lua54"
max_line_length = 120
-- busted's globals, as read_globals rather than std = "+busted" so that they still apply
-- when the standard is given on the command line (`luacheck --std lua54 ...`).
files["tests/spec"] = {
  read_globals = {
    "describe", "context", "it", "spec", "test", "pending", "setup", "teardown",
    "before_each", "after_each", "lazy_setup", "lazy_teardown", "strict_setup",
    "strict_teardown", "finally", "insulate", "expose", "randomize",
    "assert", "spy", "stub", "mock", "match",
  },
}
-- Fixtures that are wrong on purpose.
exclude_files = { "tests/fixtures/conf_cli_syntax_error.lua", "tests/fixtures/*syntax*.lua" }
files["tests/fixtures/conf_handler_errors.lua"] = { ignore = { "221" } } -- calls a nil on purpose
