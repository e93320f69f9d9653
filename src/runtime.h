/* The runtime: one libuv loop, the generations of Lua state that run on it, and the tasks
 * (coroutines) that run users' code.
 *
 * A task is a Lua thread that runs one handler (a connection, a timer tick, the entry script).
 * A C function that must wait (read, sleep, connect) registers the running task with whatever
 * will wake it, then returns ls_task_wait(): the coroutine yields back to the loop. When the
 * event arrives, its libuv callback calls ls_task_resume() and Lua calls the C function's
 * continuation, which looks again at the state (data in the buffer, a timeout, a closed
 * connection) and returns results or waits again. Continuations therefore tolerate being
 * resumed early; nothing is lost by a spurious wake-up.
 *
 * Nothing here is global: a runtime holds its generations, so a process can hold more than
 * one generation of Lua state at a time (hot reload). */
#ifndef LS_RUNTIME_H
#define LS_RUNTIME_H

#include <lua.h>
#include <lauxlib.h>
#include <stdint.h>
#include <uv.h>

#include "alloc.h"

typedef struct ls_runtime_s ls_runtime_t;
typedef struct ls_gen_s ls_gen_t;
typedef struct ls_task_s ls_task_t;
typedef struct ls_res_s ls_res_t;

/* Called when a task's coroutine has finished. `status` is LUA_OK (results are on top of
 * task->co, `nres` of them) or an error status (the message with its traceback is on top of
 * task->co). Returns 1 if it took care of an error, 0 to have it logged. */
typedef int (*ls_task_done_cb)(ls_task_t *task, int status, int nres);

struct ls_task_s {
  lua_State *co;
  ls_gen_t *gen;
  int ref;             /* registry reference that anchors co for the task's whole life */
  unsigned slot;       /* this task is gen->slots[slot - 1]; kept in co's extra space */
  ls_task_done_cb done;
  void *data;          /* for the done callback's owner */
  ls_task_t *next;     /* free list */
  ls_task_t *ready_next; /* ready queue */
  uv_timer_t timer;    /* sleeps and timeouts of whatever the task waits for */
  unsigned char running;   /* between start and finish */
  unsigned char waiting;   /* yielded, and a wake-up is welcome */
  unsigned char queued;    /* in the runtime's ready queue */
  unsigned char timed_out; /* the timer fired during the current wait */
  unsigned char timer_on;
  unsigned char budgeted;  /* subject to the CPU budget (handlers; not the script's top level) */
  uint64_t resumed_at;     /* uv_hrtime() when it last started running */
};

/* One generation: a Lua state and the tasks that run in it. A reload makes a new one; the
 * old one is retired and freed once its last task and resource are gone. */
struct ls_gen_s {
  ls_runtime_t *rt;
  ls_gen_t *next;          /* rt->gens, newest first */
  unsigned id;             /* 1 for the first load, then one more per reload */
  unsigned nres;           /* resources owned (connections, timers) */
  int retired;             /* a newer generation took over */
  int sweeping;            /* closing its last resources */
  lua_State *L;
  ls_alloc_t alloc;        /* counts this state's memory when the core created the state */
  ls_task_t **slots;
  unsigned nslots, slots_cap;
  ls_task_t *free_tasks;   /* finished tasks whose coroutines can be reused */
  unsigned live_tasks;     /* tasks started and not yet finished */
  int owns_state;          /* 1 if lua_close is ours to call */
  int http_task_ref;       /* registry ref of the HTTP request task's body (src/http_lua.c) */
};

/* Something that owns libuv handles (a listener, a connection, a timer). Its close function
 * starts closing the handles and unlinks it at once; the memory goes in the close callbacks. */
struct ls_res_s {
  ls_res_t *next, *prev;
  void (*close)(ls_res_t *res);
  ls_gen_t *gen;            /* the generation it belongs to, or NULL */
  int close_on_retire;      /* closed when its generation is retired (timers) */
};

/* The part of a listener that generations share: a reload that listens on the same address
 * takes the listener over (the socket stays open) and its new handler serves from then on. */
typedef struct ls_listener_base_s {
  ls_res_t res;             /* in rt->servers */
  ls_gen_t *gen;            /* whose handler serves it */
  int handler_ref;          /* the handler, in gen's registry */
  ls_gen_t *staged_gen;     /* a loading generation that claimed it */
  int staged_ref;           /* the new handler, in staged_gen's registry */
  struct ls_tls_ctx_s *tls; /* the TLS context new connections get, or NULL (plain) */
  struct ls_tls_ctx_s *staged_tls; /* the loading generation's, switched in with its handler */
  char key[160];            /* kind and bound address, e.g. "http://127.0.0.1:8080" */
  uint64_t id;              /* unique per listener: a stale pointer to reused memory fails */
} ls_listener_base_t;

struct ls_runtime_s {
  uv_loop_t *loop;
  ls_gen_t *gen;                 /* the generation new work goes to */
  ls_gen_t *gens;                /* every generation alive, newest first */
  ls_gen_t *loading;             /* a generation whose script is being loaded */
  uv_idle_t reap_idle;           /* frees retired generations nobody uses any more */
  unsigned gen_count;            /* generations made so far */
  uint64_t listener_count;       /* listeners made so far (their ids) */
  struct ls_shared_s *shared;    /* srv.shared: outlives the generations */
  struct ls_pubsub_s *pubsub;    /* srv.pubsub's subscriptions (src/pubsub.c), made on first use */
  int closing;                   /* ls_runtime_close runs */
  ls_task_t *ready_head, *ready_tail;
  uv_idle_t ready_idle;          /* runs the ready queue without blocking the loop */
  uv_async_t stop_async;         /* SIGINT/SIGTERM reach the loop through it (src/signals.c) */
  uv_timer_t grace_timer;
  ls_res_t servers;              /* listeners: closed when the runtime stops */
  ls_res_t resources;            /* everything else, closed when the runtime closes */
  ls_res_t on_stop;              /* told of a graceful stop (their close runs at its start):
                                  * open WebSockets say goodbye (1001) */
  char *scratch;                 /* read buffer shared by every stream read callback */
  size_t scratch_size;
  double grace;                  /* seconds a graceful stop waits for running tasks */
  int announce;                  /* print "listening on ..." lines on stdout */
  int dev;                       /* development mode: tracebacks on 500 pages */
  int stopping;
  int in_loop;                   /* uv_run is on the stack (the command's, srv.run's, srv.loop's) */
  unsigned flushing;             /* closed connections still sending their last output */
  int exit_code;
};

/* Sets up a runtime on `loop`. Returns 0 or a negative error code. */
int ls_runtime_init(ls_runtime_t *rt, uv_loop_t *loop);
/* Closes every handle on the loop, runs it until they are gone and frees the generations.
 * The loop itself is the caller's. */
void ls_runtime_close(ls_runtime_t *rt);
/* Closes the servers. With graceful set, the loop runs on until the running tasks finish or
 * rt->grace seconds pass; otherwise it stops now. */
void ls_runtime_stop(ls_runtime_t *rt, int graceful);
/* During a graceful stop, stops the loop once no task runs and no output is pending. */
void ls_runtime_check_drained(ls_runtime_t *rt);
/* Links a resource into a list (&rt->servers or &rt->resources), owned by `gen` (or NULL);
 * unlinking is idempotent and releases the generation. */
void ls_res_link(ls_res_t *list, ls_res_t *res);
void ls_res_link_gen(ls_res_t *list, ls_res_t *res, ls_gen_t *gen);
void ls_res_unlink(ls_res_t *res);

/* For listen(): the listener of the current generation with this key, if `gen` is being
 * loaded to replace it and nobody claimed it yet; NULL otherwise. */
ls_listener_base_t *ls_listener_claim(ls_gen_t *gen, const char *key);
/* Records a listener: serving with handler `ref` of `gen`. */
void ls_listener_init(ls_listener_base_t *base, ls_gen_t *gen, int ref, const char *key,
                      void (*close)(ls_res_t *));
/* 1 if `base` is a listener still open on the runtime: Lua objects hold plain pointers to
 * listeners and check them here before use, so no back-pointer needs clearing. */
int ls_listener_alive(ls_runtime_t *rt, const ls_listener_base_t *base, uint64_t id);
/* Gives the listener its id (ls_listener_init does; for listeners linked by hand). */
void ls_listener_number(ls_runtime_t *rt, ls_listener_base_t *base);
/* Releases the listener's handler references (its close function calls this). */
void ls_listener_release(ls_listener_base_t *base);

/* Makes `gen` the generation new work goes to: listeners it claimed switch to its handlers,
 * listeners of the previous generation it did not claim close, the previous generation's
 * timers stop and it is retired. */
void ls_gen_commit(ls_gen_t *gen);
/* Gives up a generation that failed to load: what it opened closes, claims are dropped. */
void ls_gen_abort(ls_gen_t *gen);
/* Frees retired generations that have nothing left running (deferred to the loop). */
void ls_gen_maybe_reap(ls_gen_t *gen);

/* Creates a generation. With L == NULL the generation makes and owns a fresh state that uses
 * the counting allocator; otherwise it wraps the caller's state. Returns NULL on failure. */
ls_gen_t *ls_gen_new(ls_runtime_t *rt, lua_State *L);
void ls_gen_free(ls_gen_t *gen);

/* Calls the function below `nargs` arguments on L's stack in protected mode with a traceback
 * handler. On error, returns the status and leaves the message with its traceback. */
int ls_pcall(lua_State *L, int nargs, int nresults);

/* Takes a task (reusing a finished one when it can) with an empty coroutine. The caller pushes
 * the function and its arguments onto task->co, then calls ls_task_start. NULL: out of memory. */
ls_task_t *ls_task_new(ls_gen_t *gen, ls_task_done_cb done, void *data);
/* Runs the task until it first waits or finishes. */
void ls_task_start(ls_task_t *task, int nargs);
/* The task whose coroutine is L, or NULL (the main thread, a user's own coroutine). */
ls_task_t *ls_task_current(ls_gen_t *gen, lua_State *L);
/* Like ls_task_current, but raises a Lua error naming `what` outside a task. */
ls_task_t *ls_task_check(ls_gen_t *gen, lua_State *L, const char *what);
/* Yields the task until a wake-up or, with timeout_ms >= 0, until the timeout (then
 * task->timed_out is set). Use as `return ls_task_wait(...)` from a lua_CFunction. */
int ls_task_wait(ls_task_t *task, int64_t timeout_ms, lua_KContext ctx, lua_KFunction k);
/* A deadline for ls_task_wait_until: the loop time timeout_ms from now, or 0 (none) for a
 * negative timeout. It fits a continuation's context. */
lua_KContext ls_task_deadline(ls_runtime_t *rt, int64_t timeout_ms);
/* ls_task_wait until a deadline from ls_task_deadline (0: none), which k gets back as its
 * context: a wait resumed early (spurious wake-ups are allowed) goes on with the time left. */
int ls_task_wait_until(ls_task_t *task, lua_KContext deadline, lua_KFunction k);
/* Resumes a waiting task now. Only from a libuv callback, never from inside Lua. */
void ls_task_resume(ls_task_t *task);
/* Resumes a waiting task on the next turn of the loop. Safe from anywhere. */
void ls_task_wake(ls_task_t *task);
/* Reads and clears the timeout flag of the current wait. */
static inline int ls_task_take_timeout(ls_task_t *task) {
  int t = task->timed_out;
  task->timed_out = 0;
  return t;
}

/* The generation of a C function registered with the generation as its first upvalue (the
 * core's functions are: see ls_tcp_open and friends). */
static inline ls_gen_t *ls_upvalue_gen(lua_State *L) {
  return (ls_gen_t *)lua_touserdata(L, lua_upvalueindex(1));
}

/* Pushes nil, message, code for a runtime failure and returns 3 (the luv convention). */
int ls_push_error(lua_State *L, int err);
/* Converts a timeout in seconds (nil or negative: none) at `idx` to milliseconds or -1. */
int64_t ls_opt_timeout_ms(lua_State *L, int idx, int64_t def);
/* Options tables (`opts` is a stack index, 0 for none): the field converted, or `def` when it
 * is absent. A field of the wrong type raises an error naming it. */
int64_t ls_opt_timeout_field(lua_State *L, int opts, const char *name, int64_t def);
size_t ls_opt_size_field(lua_State *L, int opts, const char *name, size_t def);
const char *ls_opt_string_field(lua_State *L, int opts, const char *name);

/* Registers a class: metatable `name` with the metamethods, and an __index table of the
 * methods; every one of them gets the metatable as its first upvalue, so checking an argument
 * is one pointer comparison (see tcp.c's check of a luasrv.Conn). */
void ls_new_class(lua_State *L, const char *name, const luaL_Reg *meth,
                  const luaL_Reg *metameth);
/* The object of class `name` at argument 1, in a function of such a class: its metatable is
 * compared with the function's first upvalue (one pointer comparison); luaL_checkudata's lookup
 * by name, and its error message, are the slow path. */
void *ls_check_class(lua_State *L, const char *name);
/* The same for the object at idx, its metatable in the function's upvalue `up`. */
void *ls_check_class_at(lua_State *L, int idx, int up, const char *name);

/* Objects whose methods run once per request or per message are told apart by a tag: their
 * first member is a `const char *` holding the address of their class's tag (a static only
 * their own file stores), and Lua code cannot write into a user data, so the word and the size
 * identify an instance for a fraction of a metatable comparison's cost. That also makes
 * metamethods safe when Lua calls them on something else (getmetatable(req).__index(x)). */
static inline void *ls_tagged(lua_State *L, int idx, const char *tag, size_t size) {
  const char **ud = lua_touserdata(L, idx);
  return ud != NULL && lua_rawlen(L, idx) == size && *ud == tag ? ud : NULL;
}

/* The tagged object at idx, or luaL_checkudata's error for the class `name`. */
static inline void *ls_check_tagged(lua_State *L, int idx, const char *tag, size_t size,
                                    const char *name) {
  void *ud = ls_tagged(L, idx, tag, size);
  return ud != NULL ? ud : luaL_checkudata(L, idx, name);
}

#endif
