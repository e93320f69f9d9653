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
#include "reload.h"
#include "runtime.h"
#include "pubsub.h"
#include "shared.h"
#include "signals.h"
#include "watchdog.h"
#include "workers.h"

#define EXIT_USAGE 2

typedef struct options_s {
  const char *script;
  int script_index;  /* argv index of the script */
  int check;
  int quiet;
  int dev;
  int reload;
  int log_json;
  double grace;
  double cpu_budget;   /* seconds; 0: off */
  double memory_limit; /* MiB per Lua state; 0: none */
  double shared_size;  /* MiB of srv.shared */
  unsigned workers;    /* --workers: 0 for a single process */
} options_t;

static void print_usage(FILE *out) {
  fputs("usage: luasrv [options] script.lua [args...]\n"
        "       luasrv test [busted arguments]     runs ./spec with busted (see docs/guide.md)\n"
        "\n"
        "Runs a Lua 5.4 script whose TCP, UDP and HTTP listeners, timers and clients are served\n"
        "by one event loop. A script with no listeners runs to completion; with listeners it\n"
        "serves until SIGINT (stop now) or SIGTERM (finish running handlers, up to --grace\n"
        "seconds).\n"
        "\n"
        "options:\n"
        "  --check        load the script and report syntax errors; serve nothing\n"
        "  --cpu-budget S stop a handler that runs S seconds without yielding (default 1;\n"
        "                 0: no limit)\n"
        "  --memory-limit MB  Lua memory of the script's state (default 1024; 0: none)\n"
        "  --dev          development mode: tracebacks on 500 pages, debug log lines\n"
        "  --reload       reload when the script or a Lua file it required from its\n"
        "                 directory changes (implies --dev); SIGHUP reloads in any mode\n"
        "  --grace S      seconds a SIGTERM waits for running handlers (default 5)\n"
        "  --shared-size MB  size of the srv.shared store (default 16; at least 0.0625)\n"
        "  --workers N    run N worker processes under a master (auto: one per CPU)\n"
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
  o->shared_size = (double)(LS_SHARED_DEFAULT_SIZE >> 20);
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
    } else if (strcmp(a, "--reload") == 0) {
      o->reload = 1;
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
    } else if (strcmp(a, "--workers") == 0) {
      if (i + 1 >= argc)
        usage_error("missing number after", a);
      i++;
      if (strcmp(argv[i], "auto") == 0) {
        o->workers = uv_available_parallelism();
      } else {
        char *end;
        long n;
        errno = 0;
        n = strtol(argv[i], &end, 10);
        if (errno != 0 || *end != '\0' || end == argv[i] || n < 1 || n > 1024)
          usage_error("--workers takes a number from 1 to 1024 or auto, not", argv[i]);
        o->workers = (unsigned)n;
      }
    } else if (strcmp(a, "--shared-size") == 0) {
      o->shared_size = number_arg(argc, argv, &i);
      if (o->shared_size * 1024 * 1024 < (double)LS_SHARED_MIN_SIZE ||
          o->shared_size > 1024 * 1024)
        usage_error("--shared-size must be between 0.0625 and 1048576 MB, not", argv[i]);
    } else {
      usage_error("unknown option", a);
    }
  }
  if (i >= argc)
    usage_error("no script given", NULL);
  o->script = argv[i];
  o->script_index = i;
}

static void flush_stdout_cb(uv_timer_t *t) {
  (void)t;
  fflush(stdout);
}

/* --check: compiles the script in a plain state and reports the first syntax error. */
static int check_script(const char *script) {
  lua_State *L = luaL_newstate();
  int ok;
  if (L == NULL) {
    fputs("luasrv: not enough memory\n", stderr);
    return 1;
  }
  ok = luaL_loadfile(L, script) == LUA_OK;
  if (ok)
    printf("%s: ok\n", script);
  else
    fprintf(stderr, "luasrv: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return ok ? 0 : 1;
}

/* Whether `path` names an existing file. */
static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Finds `name` on $PATH; writes its path into out. Returns 1 if found. */
static int find_on_path(const char *name, char *out, size_t size) {
  const char *path = getenv("PATH");
  while (path != NULL && *path != '\0') {
    const char *end = strchr(path, ':');
    size_t len = end != NULL ? (size_t)(end - path) : strlen(path);
    snprintf(out, size, "%.*s/%s", (int)len, path, name);
    if (len > 0 && access(out, X_OK) == 0)
      return 1;
    path = end != NULL ? end + 1 : NULL;
  }
  return 0;
}

/* luasrv test [busted arguments]: runs the busted specs of the current directory (./spec by
 * default) under lua5.4 with luasrv's Lua files and luasrv/core.so on the search paths, so a
 * user's project needs no LUA_PATH of its own. Replaces the process; returns only on error. */
static int run_tests(int argc, char **argv) {
  char lua_dir[4096], cmod[4200], exe[4096], busted[4096], lua[4096];
  char lua_path[16384], lua_cpath[16384];
  const char *old_path = getenv("LUA_PATH"), *old_cpath = getenv("LUA_CPATH");
  size_t len = sizeof exe;
  char **args;
  int i;
  ls_find_lua_dir(lua_dir, sizeof lua_dir);
  cmod[0] = '\0';
  if (uv_exepath(exe, &len) == 0 && strrchr(exe, '/') != NULL) {
    *strrchr(exe, '/') = '\0';
    /* a build directory (lib/luasrv/core.so) or an installed tree (../lib/lua/5.4/...) */
    snprintf(cmod, sizeof cmod, "%s/lib/luasrv/core.so", exe);
    if (exists(cmod))
      snprintf(cmod, sizeof cmod, "%s/lib", exe);
    else
      snprintf(cmod, sizeof cmod, "%s/../lib/lua/5.4", exe);
  }
  if (!find_on_path("lua5.4", lua, sizeof lua)) {
    fputs("luasrv test: lua5.4 is not installed (apt-get install lua5.4)\n", stderr);
    return 1;
  }
  if (!find_on_path("busted", busted, sizeof busted)) {
    fputs("luasrv test: busted is not installed (apt-get install lua-busted)\n", stderr);
    return 1;
  }
  snprintf(lua_path, sizeof lua_path, "%s/?.lua;%s/?/init.lua;%s", lua_dir, lua_dir,
           old_path != NULL ? old_path : ";");
  snprintf(lua_cpath, sizeof lua_cpath, "%s/?.so;%s/?.so;%s", cmod, LUASRV_INSTALL_CMOD_DIR,
           old_cpath != NULL ? old_cpath : ";");
  setenv("LUA_PATH", lua_path, 1);
  setenv("LUA_CPATH", lua_cpath, 1);
  args = calloc((size_t)argc + 2, sizeof *args);
  if (args == NULL)
    return 1;
  args[0] = lua;
  args[1] = busted;
  for (i = 2; i < argc; i++)
    args[i] = argv[i];
  execv(lua, args);
  fprintf(stderr, "luasrv test: cannot run %s: %s\n", lua, strerror(errno));
  free(args);
  return 1;
}

/* What a serving process needs: the options, the command line and the srv.shared zone. */
typedef struct serve_args_s {
  const options_t *opts;
  int argc;
  char **argv;
  ls_shared_t *zone;
} serve_args_t;

/* Makes the runtime, loads the script and serves until stopped: the whole life of a single
 * process, or of one worker under --workers. Returns the exit status. */
static int serve(void *arg) {
  const serve_args_t *sa = arg;
  const options_t *opts = sa->opts;
  ls_runtime_t rt;
  ls_app_t app;
  uv_timer_t flush_timer;
  int exit_code;

  if (ls_runtime_init(&rt, uv_default_loop()) != 0) {
    fputs("luasrv: cannot start the event loop\n", stderr);
    return 1;
  }
  rt.grace = opts->grace;
  rt.announce = ls_worker_id() == 0; /* under --workers the master prints the addresses */
  rt.shared = sa->zone;
  rt.dev = opts->dev;
  if (ls_signals_start(&rt) != 0)
    ls_log(LS_LOG_WARN, "cannot handle SIGINT and SIGTERM; they end the process at once");
  if (ls_watchdog_start((unsigned)(opts->cpu_budget * 1000)) != 0)
    ls_log(LS_LOG_WARN, "cannot start the CPU budget watchdog; handlers run unbounded");
  uv_timer_init(rt.loop, &flush_timer);
  uv_timer_start(&flush_timer, flush_stdout_cb, 200, 200);
  uv_unref((uv_handle_t *)&flush_timer);

  memset(&app, 0, sizeof app);
  app.rt = &rt;
  app.script = opts->script;
  app.argc = sa->argc;
  app.argv = sa->argv;
  app.script_index = opts->script_index;
  app.memory_limit = (size_t)(opts->memory_limit * 1024 * 1024);
  app.watch = opts->reload && ls_worker_id() == 0; /* a worker's master watches */
  ls_worker_attach(&rt, &app);
  rt.in_loop = 1;
  if (ls_app_start(&app) == 0 && !rt.stopping)
    uv_run(rt.loop, UV_RUN_DEFAULT);
  rt.in_loop = 0;
  ls_signals_close(&rt);
  ls_worker_detach();
  ls_app_close(&app);
  ls_http_log_close();
  uv_close((uv_handle_t *)&flush_timer, NULL);
  ls_watchdog_stop();
  fflush(stdout);
  exit_code = rt.exit_code;
  ls_runtime_close(&rt); /* unmaps the zone from this process */
  ls_gzip_release();
  uv_loop_close(uv_default_loop());
  return exit_code;
}

int main(int argc, char **argv) {
  options_t opts;
  serve_args_t sa;

  if (argc >= 2 && strcmp(argv[1], "test") == 0)
    return run_tests(argc, argv);

  parse_args(argc, argv, &opts);
  if (opts.check)
    return check_script(opts.script);
  /* stdout carries the access log: block-buffered and flushed by a timer, so logging costs no
   * system call per request. Lines that tools wait for are flushed at once. */
  if (!isatty(STDOUT_FILENO))
    setvbuf(stdout, NULL, _IOFBF, 64 * 1024);
  ls_log_set_level(opts.quiet ? LS_LOG_WARN : opts.dev ? LS_LOG_DEBUG : LS_LOG_INFO);
  ls_http__set_log_format(opts.log_json, !opts.quiet);

  sa.opts = &opts;
  sa.argc = argc;
  sa.argv = argv;
  /* Mapped before any fork, so that every worker shares it. */
  sa.zone = ls_shared_new((size_t)(opts.shared_size * 1024 * 1024));
  if (sa.zone == NULL) {
    fprintf(stderr, "luasrv: cannot map %g MB of shared memory for srv.shared\n",
            opts.shared_size);
    return 1;
  }
  if (opts.workers > 0) {
    ls_workers_opts_t wo;
    int status;
    wo.count = opts.workers;
    wo.grace = opts.grace;
    wo.watch = opts.reload;
    /* srv.pubsub's ring between the workers, also mapped before the fork. */
    if (ls_pubsub_shm_init(opts.workers, LS_PUBSUB_RING_SIZE) != 0)
      ls_log(LS_LOG_WARN, "cannot map the publish/subscribe ring: messages stay in each worker");
    status = ls_workers_run(&wo, serve, &sa);
    ls_shared_free(sa.zone);
    return status;
  }
  return serve(&sa);
}
