/* The luasrv command: parses the command line, makes the runtime and the first generation of
 * Lua state, runs the script's top level as a task and then serves until a signal. */
#include <errno.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "module.h"
#include "runtime.h"
#include "watchdog.h"

#define EXIT_USAGE 2

typedef struct options_s {
  const char *script;
  int script_index;  /* argv index of the script */
  int check;
  int quiet;
  int dev;
  int log_json;
  double grace;
  double cpu_budget;   /* seconds; 0: off */
  double memory_limit; /* MiB per Lua state; 0: none */
} options_t;

static void print_usage(FILE *out) {
  fputs("usage: luasrv [options] script.lua [args...]\n"
        "\n"
        "Runs a Lua 5.4 script whose TCP listeners, timers and clients are served by one event\n"
        "loop. A script with no listeners runs to completion; with listeners it serves until\n"
        "SIGINT (stop now) or SIGTERM (finish running handlers, up to --grace seconds).\n"
        "\n"
        "options:\n"
        "  --check        load the script and report syntax errors; serve nothing\n"
        "  --cpu-budget S stop a handler that runs S seconds without yielding (default 1;\n"
        "                 0: no limit)\n"
        "  --memory-limit MB  Lua memory of the script's state (default 1024; 0: none)\n"
        "  --dev          development mode (debug log lines)\n"
        "  --grace S      seconds a SIGTERM waits for running handlers (default 5)\n"
        "  --log-format F access log format: combined (default) or json\n"
        "  --quiet        no access log; log only warnings and errors\n"
        "  --version      print the version and exit\n"
        "  --help         print this help and exit\n",
        out);
}

/* Prints "luasrv: <what> '<arg>'" (or just <what>) and exits with the usage status. */
static void usage_error(const char *what, const char *arg) {
  if (arg != NULL)
    fprintf(stderr, "luasrv: %s '%s' (see luasrv --help)\n", what, arg);
  else
    fprintf(stderr, "luasrv: %s (see luasrv --help)\n", what);
  exit(EXIT_USAGE);
}

/* The non-negative number after option argv[*i]; exits with a usage error otherwise. */
static double number_arg(int argc, char **argv, int *i) {
  const char *opt = argv[*i];
  char *end;
  double v;
  if (*i + 1 >= argc)
    usage_error("missing number after", opt);
  (*i)++;
  errno = 0;
  v = strtod(argv[*i], &end);
  if (errno != 0 || *end != '\0' || end == argv[*i] || v < 0)
    usage_error("expected a non-negative number, not", argv[*i]);
  return v;
}

static void parse_args(int argc, char **argv, options_t *o) {
  int i;
  memset(o, 0, sizeof *o);
  o->grace = 5.0;
  o->cpu_budget = 1.0;
  o->memory_limit = 1024;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0')
      break;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      print_usage(stdout);
      exit(0);
    } else if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
      printf("luasrv %s (%s, libuv %s)\n", LUASRV_VERSION, LUA_RELEASE, uv_version_string());
      exit(0);
    } else if (strcmp(a, "--check") == 0) {
      o->check = 1;
    } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
      o->quiet = 1;
    } else if (strcmp(a, "--dev") == 0) {
      o->dev = 1;
    } else if (strcmp(a, "--log-format") == 0) {
      if (i + 1 >= argc)
        usage_error("missing format after", a);
      i++;
      if (strcmp(argv[i], "json") == 0)
        o->log_json = 1;
      else if (strcmp(argv[i], "combined") != 0)
        usage_error("--log-format must be combined or json, not", argv[i]);
    } else if (strcmp(a, "--grace") == 0) {
      o->grace = number_arg(argc, argv, &i);
    } else if (strcmp(a, "--cpu-budget") == 0) {
      o->cpu_budget = number_arg(argc, argv, &i);
    } else if (strcmp(a, "--memory-limit") == 0) {
      o->memory_limit = number_arg(argc, argv, &i);
    } else {
      usage_error("unknown option", a);
    }
  }
  if (i >= argc)
    usage_error("no script given", NULL);
  o->script = argv[i];
  o->script_index = i;
}

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

/* Where the Lua half (lua/luasrv) lives: $LUASRV_LUA_DIR, beside an installed binary, or the source tree
 * the binary was built from. */
static void find_lua_dir(char *out, size_t size) {
  const char *env = getenv("LUASRV_LUA_DIR");
  char exe[4000];
  size_t len = sizeof exe;
  if (env != NULL && *env != '\0') {
    snprintf(out, size, "%s", env);
    return;
  }
  if (uv_exepath(exe, &len) == 0) {
    char *slash = strrchr(exe, '/');
    char probe[4100];
    if (slash != NULL) {
      *slash = '\0';
      snprintf(probe, sizeof probe, "%s/../share/luasrv/lua/luasrv/init.lua", exe);
      if (file_exists(probe)) {
        snprintf(out, size, "%s/../share/luasrv/lua", exe);
        return;
      }
    }
  }
  snprintf(out, size, "%s", file_exists(LUASRV_SOURCE_LUA_DIR "/luasrv/init.lua")
                                ? LUASRV_SOURCE_LUA_DIR
                                : LUASRV_INSTALL_LUA_DIR);
}

/* Loads the standard libraries, points package.path at our Lua half and makes
 * require "luasrv.core" bind to this generation. Runs protected (pushed as a C function). */
static int setup_state(lua_State *L) {
  ls_gen_t *gen = lua_touserdata(L, 1);
  char dir[4096];
  luaL_openlibs(L);
  lua_pushlightuserdata(L, gen);
  lua_setfield(L, LUA_REGISTRYINDEX, LS_GEN_KEY);
  find_lua_dir(dir, sizeof dir);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, ls_module_open);
  lua_setfield(L, -2, "luasrv.core");
  return 0;
}

/* Sets the global `arg` as the stand-alone interpreter does and pushes the script's own
 * arguments; returns how many. */
static int push_script_args(lua_State *L, int argc, char **argv, int script_index) {
  int i;
  lua_createtable(L, argc - script_index - 1, script_index + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script_index);
  }
  lua_setglobal(L, "arg");
  luaL_checkstack(L, argc, "too many arguments");
  for (i = script_index + 1; i < argc; i++)
    lua_pushstring(L, argv[i]);
  return argc - script_index - 1;
}

static void flush_stdout_cb(uv_timer_t *t) {
  (void)t;
  fflush(stdout);
}

static int main_done(ls_task_t *task, int status, int nres) {
  ls_runtime_t *rt = task->data;
  (void)nres;
  if (status == LUA_OK)
    return 0;
  /* The script failed at its top level: report it as the interpreter does and exit. */
  fprintf(stderr, "luasrv: %s\n", lua_tostring(task->co, -1));
  fflush(stderr);
  rt->exit_code = 1;
  ls_runtime_stop(rt, 0);
  return 1;
}

int main(int argc, char **argv) {
  options_t opts;
  ls_runtime_t rt;
  uv_timer_t flush_timer;
  ls_gen_t *gen;
  ls_task_t *task;
  lua_State *L;
  int nargs;
  int exit_code;

  parse_args(argc, argv, &opts);
  /* stdout carries the access log: block-buffered and flushed by a timer, so logging costs no
   * system call per request. Lines that tools wait for are flushed at once. */
  if (!isatty(STDOUT_FILENO))
    setvbuf(stdout, NULL, _IOFBF, 64 * 1024);
  ls_log_set_level(opts.quiet ? LS_LOG_WARN : opts.dev ? LS_LOG_DEBUG : LS_LOG_INFO);
  ls_http__set_log_format(opts.log_json, !opts.quiet);

  if (ls_runtime_init(&rt, uv_default_loop()) != 0) {
    fputs("luasrv: cannot start the event loop\n", stderr);
    return 1;
  }
  rt.grace = opts.grace;
  rt.announce = 1;
  rt.dev = opts.dev;
  gen = ls_gen_new(&rt, NULL);
  if (gen == NULL) {
    fputs("luasrv: not enough memory\n", stderr);
    return 1;
  }
  rt.gen = gen;
  gen->alloc.limit = (size_t)(opts.memory_limit * 1024 * 1024);
  L = gen->L;
  lua_pushcfunction(L, setup_state);
  lua_pushlightuserdata(L, gen);
  if (ls_pcall(L, 1, 0) != LUA_OK) {
    fprintf(stderr, "luasrv: %s\n", lua_tostring(L, -1));
    return 1;
  }
  if (luaL_loadfile(L, opts.script) != LUA_OK) {
    fprintf(stderr, "luasrv: %s\n", lua_tostring(L, -1));
    ls_runtime_close(&rt);
    return 1;
  }
  if (opts.check) {
    printf("%s: ok\n", opts.script);
    ls_runtime_close(&rt);
    return 0;
  }
  ls_runtime_handle_signals(&rt);
  if (ls_watchdog_start((unsigned)(opts.cpu_budget * 1000)) != 0)
    ls_log(LS_LOG_WARN, "cannot start the CPU budget watchdog; handlers run unbounded");
  uv_timer_init(rt.loop, &flush_timer);
  uv_timer_start(&flush_timer, flush_stdout_cb, 200, 200);
  uv_unref((uv_handle_t *)&flush_timer);
  task = ls_task_new(gen, main_done, &rt);
  if (task == NULL) {
    fputs("luasrv: not enough memory\n", stderr);
    return 1;
  }
  lua_xmove(L, task->co, 1);
  nargs = push_script_args(task->co, argc, argv, opts.script_index);
  rt.in_loop = 1;
  ls_task_start(task, nargs);
  if (!rt.stopping)
    uv_run(rt.loop, UV_RUN_DEFAULT);
  rt.in_loop = 0;
  uv_close((uv_handle_t *)&flush_timer, NULL);
  ls_watchdog_stop();
  fflush(stdout);
  exit_code = rt.exit_code;
  ls_runtime_close(&rt);
  uv_loop_close(uv_default_loop());
  return exit_code;
}
