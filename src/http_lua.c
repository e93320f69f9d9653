/* Running a request's handler: the task each request gets, the core's shortcut for exact
 * routes, the answer made from the handler's return values, a failed handler's 500, the end
 * of a request; and the Lua side's rejections and temporary files. The request and response
 * objects are http_request.c and http_response.c. */
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "fs.h"
#include "http.h"
#include "json.h"
#include "log.h"

/* Registry keys of the two metatables (a light userdata key is found without hashing a
 * name). The function each request's task starts with, http_task_body, is a closure over what
 * it needs on every request, kept in the registry under gen->http_task_ref. */
static const char req_mt_key, res_mt_key;

/* http_task_body's upvalues. */
#define UP_METHODS lua_upvalueindex(1) /* method names, indexed by llhttp's number + 1 */
#define UP_REQ_MT lua_upvalueindex(2)
#define UP_RES_MT lua_upvalueindex(3)
#define UP_ROUTES_KEY lua_upvalueindex(4) /* the string "routes" */
#define UP_TREE_KEY lua_upvalueindex(5)   /* the string "route_tree" */

/* ---- rejecting a request, temporary files ------------------------------------------------- */

/* core.http_reject(req, status [, message]): marks the request to be answered with `status`
 * and `message` (plain text; default the status line's text) when its handler raises, which
 * the caller does next: the form parser uses it for a body over a limit (413) or malformed
 * (400). The connection closes after that answer, since the rest of the body is unread. The
 * body can no longer be read. Does nothing once the request has ended. */
static int l_http_reject(lua_State *L) {
  ls_http_conn_t *c = ls_http__req_conn(L, 1);
  int status = ls_http__check_status(L, 2);
  size_t len = 0;
  const char *msg = luaL_optlstring(L, 3, NULL, &len);
  if (c == NULL)
    return 0;
  if (c->reject_msg != NULL) {
    ls_free(c->reject_msg, c->reject_msg_len + 1);
    c->reject_msg = NULL;
  }
  if (msg != NULL && (c->reject_msg = ls_malloc(len + 1)) != NULL) {
    memcpy(c->reject_msg, msg, len + 1);
    c->reject_msg_len = len;
  }
  c->reject_status = status;
  return 0;
}

/* Answers a request that core.http_reject marked, with its message. */
static void reject_response(ls_http_conn_t *c) {
  c->keep_alive = 0;
  ls_buf_consume(&c->res_headers, ls_buf_len(&c->res_headers));
  c->has_ctype = c->has_clen = 0;
  ls_http__append_response(c, c->reject_status, "text/plain; charset=utf-8", c->reject_msg,
                           c->reject_msg_len);
  c->state = LS_HTTP_CLOSING;
}

/* core.http_tmpfile(req [, dir]) -> path | nil, message, code: a new empty file (mode 0600)
 * in dir (default $TMPDIR or /tmp), removed when the request ends however it ends. */
static int l_http_tmpfile(lua_State *L) {
  ls_http_conn_t *c = ls_http__req_conn(L, 1);
  const char *dir = luaL_optstring(L, 2, NULL);
  const char *path;
  int err;
  if (c == NULL)
    return ls_push_error(L, LS_ECLOSED);
  path = ls_fs_tmp_create(&c->tmpfiles, dir, &err);
  if (path == NULL)
    return ls_push_error(L, err);
  lua_pushstring(L, path);
  return 1;
}

/* ---- running the handler ------------------------------------------------------------------ */

/* Builds the response from the handler's return values, at stack indices first..top:
 * body | status, body | status, headers, body, where a string body is HTML and a table is
 * JSON. Runs in the handler's task, so a bad value is that task's error (a 500). */
static void finish_from_returns(lua_State *L, ls_http_conn_t *c, int first) {
  int n = lua_gettop(L) - first + 1;
  int idx = first, status = c->status ? c->status : 200;
  const char *ctype = "text/html; charset=utf-8";
  const char *body = "";
  size_t len = 0;
  if (n >= 1 && lua_type(L, first) == LUA_TNUMBER) {
    status = ls_http__check_status(L, first);
    idx = first + 1;
    if (n >= 3) {
      if (!lua_isnil(L, first + 1)) {
        luaL_checktype(L, first + 1, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, first + 1) != 0) {
          if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "header names must be strings");
          ls_http__add_header_value(L, c, lua_gettop(L) - 1, lua_gettop(L));
          lua_pop(L, 1);
        }
      }
      idx = first + 2;
    }
  }
  if (idx <= lua_gettop(L)) {
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
      body = lua_tolstring(L, idx, &len);
      break;
    case LUA_TUSERDATA: /* req.headers, or another object that pairs can walk */
      if (luaL_getmetafield(L, idx, "__pairs") == LUA_TNIL)
        luaL_error(L, "handler returned a userdata without __pairs as the body (expected a "
                      "string or a table)");
      lua_pop(L, 1);
      /* fall through */
    case LUA_TTABLE:
      body = ls_json_encode(L, idx, &len);
      ctype = "application/json";
      break;
    case LUA_TNIL:
    case LUA_TNONE:
      break;
    default:
      luaL_error(L, "handler returned a %s as the body (expected a string or a table)",
                 luaL_typename(L, idx));
    }
  }
  ls_http__append_response(c, status, ctype, body, len);
}

static void log_failure(ls_http_conn_t *c, const char *what, const char *msg) {
  char target[1024];
  ls_http__target_text(c, target, sizeof target);
  ls_log(LS_LOG_ERROR, "%s %s: %s: %s", llhttp_method_name((llhttp_method_t)c->parser.method),
         target, what, msg);
}

/* Answers 500 for a failed handler: with the traceback in --dev, a plain page otherwise. */
static void respond_500(ls_http_conn_t *c, const char *trace) {
  ls_buf_consume(&c->res_headers, ls_buf_len(&c->res_headers));
  c->has_ctype = c->has_clen = 0;
  if (c->rt->dev && trace != NULL) {
    ls_http__append_response(c, 500, "text/plain; charset=utf-8", trace, strlen(trace));
  } else {
    static const char page[] = "500 Internal Server Error\n";
    ls_http__append_response(c, 500, "text/plain; charset=utf-8", page, sizeof page - 1);
  }
}

static int http_task_done(ls_task_t *task, int status, int nres) {
  ls_http_conn_t *c = task->data;
  lua_State *co = task->co;
  int answered;
  if (c == NULL)
    return 0; /* the connection went away; the error, if any, is logged */
  answered = c->answered;
  c->task = NULL;
  if (status != LUA_OK && c->reject_status != 0 && !c->head_sent && !answered) {
    /* req:body() found the body too large or malformed, or the handler rejected it (a form
     * over a limit): answer with that status. */
    if (c->reject_msg != NULL)
      reject_response(c);
    else
      ls_http__error_response(c, c->reject_status, 1);
  } else if (status != LUA_OK) {
    const char *trace = lua_tostring(co, -1);
    log_failure(c, "handler failed", trace != NULL ? trace : "(error object)");
    c->keep_alive = 0;
    if (c->head_sent) {
      /* Part of a streamed response is out: all the client can be told is that it is cut
       * short, so the connection is aborted rather than the body ended. */
      ls_http__end_request(c);
      ls_http__close(c);
      return 1;
    }
    if (!answered)
      respond_500(c, trace); /* else the complete response already queued goes out */
  } else if (c->head_sent) {
    ls_http__stream_end(c);
  }
  ls_http__end_request(c);
  ls_http__process(c);
  return 1;
}

/* After the handler returned: its results are on the stack from index ctx up. Unless the
 * response went out already (res:send, res:json, res:write...), they make it. */
static int http_task_body_k(lua_State *L, int status, lua_KContext ctx) {
  ls_task_t *task = lua_touserdata(L, 1);
  ls_http_conn_t *c = task->data; /* NULL once the connection is gone */
  (void)status;
  if (c != NULL && !c->answered && !c->head_sent) {
    finish_from_returns(L, c, (int)ctx);
    c->answered = 1;
  }
  return 0;
}

/* How many of (req, res) the handler at index 2 can reach: a Lua function declared with fewer
 * parameters (and no `...`) never sees the others, so they are not made. A callable table (an
 * app) or a C function gets both. */
static int objects_wanted(lua_State *L) {
  lua_Debug ar;
  if (lua_type(L, 2) != LUA_TFUNCTION || lua_iscfunction(L, 2))
    return 2;
  lua_pushvalue(L, 2);
  lua_getinfo(L, ">u", &ar);
  return ar.isvararg || ar.nparams > 2 ? 2 : ar.nparams;
}

/* The body of a request's task, with the task (light userdata) and the handler on the stack:
 * handler(req, res), whose results http_task_body_k turns into the response. */
static int http_task_body(lua_State *L) {
  ls_task_t *task = lua_touserdata(L, 1);
  ls_http_conn_t *c = task->data;
  ls_http_req_ud_t *req;
  ls_http_res_ud_t *res;
  int wanted, routed;
  /* An app's route the core can find itself is called straight (http_route.c); with the
   * table of its parameters at index 3 when it has some. */
  routed = ls_http__route(L, 2, UP_ROUTES_KEY, UP_TREE_KEY, UP_METHODS, c->parser.method,
                          ls_buf_head(&c->head) + c->path_off, c->path_len);
  if (routed != 2)
    lua_pushnil(L);
  wanted = objects_wanted(L);
  if (wanted == 0) {
    lua_pushvalue(L, 2);
    lua_callk(L, 0, LUA_MULTRET, 4, http_task_body_k);
    return http_task_body_k(L, LUA_OK, 4);
  }
  /* The objects stay on the stack (from index 4) for the whole request: the connection points
   * at them, so they must outlive whatever the handler keeps. The request's user values: its
   * field cache, req.headers and req.params. */
  req = lua_newuserdatauv(L, sizeof *req, LS_REQ_UVALUES);
  req->tag = &ls__req_tag;
  req->c = c;
  req->has_cache = 0;
  lua_pushvalue(L, UP_REQ_MT);
  lua_setmetatable(L, -2);
  if (routed == 2) {
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, -2, LS_REQ_UV_PARAMS);
  }
  c->req_ud = req;
  if (wanted == 2) {
    res = lua_newuserdatauv(L, sizeof *res, 0);
    res->tag = &ls__res_tag;
    res->c = c;
    lua_pushvalue(L, UP_RES_MT);
    lua_setmetatable(L, -2);
    c->res_ud = res;
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 4);
  if (wanted == 2)
    lua_pushvalue(L, 5);
  lua_callk(L, wanted, LUA_MULTRET, 4 + wanted, http_task_body_k);
  return http_task_body_k(L, LUA_OK, 4 + wanted);
}

void ls_http__dispatch(ls_http_conn_t *c) {
  ls_task_t *task;
  if (c->listener->closed) {
    /* The listener went away in a reload: nothing serves this address any more. Close as an
     * idle keep-alive connection closes, so a client retries (and finds nothing there). */
    ls_http__close(c);
    return;
  }
  /* Each request goes to the generation serving the listener now (after a reload, the new
   * one), even on a connection accepted before. */
  c->gen = c->listener->base.gen;
  task = ls_task_new(c->gen, http_task_done, c);
  if (task == NULL) {
    ls_http__error_response(c, 503, 1);
    return;
  }
  c->task = task;
  c->answered = 0;
  task->budgeted = 1;
  lua_rawgeti(task->co, LUA_REGISTRYINDEX, c->gen->http_task_ref);
  lua_pushlightuserdata(task->co, task);
  lua_rawgeti(task->co, LUA_REGISTRYINDEX, c->listener->base.handler_ref);
  ls_task_start(task, 2);
}

void ls_http__end_request(ls_http_conn_t *c) {
  if (c->gz != NULL) {
    ls_gzip_stream_free(c->gz);
    c->gz = NULL;
  }
  if (c->tmpfiles != NULL)
    ls_fs_tmp_remove_all(&c->tmpfiles);
  if (c->reject_msg != NULL) {
    ls_free(c->reject_msg, c->reject_msg_len + 1);
    c->reject_msg = NULL;
  }
  if (c->req_ud != NULL) {
    c->req_ud->c = NULL;
    c->req_ud = NULL;
  }
  if (c->res_ud != NULL) {
    c->res_ud->c = NULL;
    c->res_ud = NULL;
  }
  if (c->hdr_ud != NULL) {
    c->hdr_ud->c = NULL;
    c->hdr_ud = NULL;
  }
  if (c->status != 0 && c->url_len > 0)
    ls_http__access_log(c);
}

void ls_http__open_lua(lua_State *L, ls_gen_t *gen) {
  int core = lua_gettop(L);
  ls_http__request_open(L);
  ls_http__response_open(L, core);
  luaL_getmetatable(L, LS_REQ_MT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &req_mt_key);
  luaL_getmetatable(L, LS_RES_MT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &res_mt_key);
  lua_createtable(L, HTTP_FLUSH + 1, 0); /* HTTP_FLUSH: llhttp's last method */
  for (int m = 0; m <= HTTP_FLUSH; m++) {
    lua_pushstring(L, llhttp_method_name((llhttp_method_t)m));
    lua_rawseti(L, -2, m + 1);
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &req_mt_key);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &res_mt_key);
  lua_pushliteral(L, "routes");
  lua_pushliteral(L, "route_tree");
  lua_pushcclosure(L, http_task_body, 5);
  gen->http_task_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* The method tables, for lua/luasrv/http.lua to add the methods written in Lua (req:form,
   * res:cookie), and the helpers those use. */
  lua_getfield(L, LUA_REGISTRYINDEX, LS_REQ_METHODS_KEY);
  lua_setfield(L, core, "http_request_methods");
  luaL_getmetatable(L, LS_RES_MT);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, core, "http_response_methods");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_http_reject);
  lua_setfield(L, core, "http_reject");
  lua_pushcfunction(L, l_http_tmpfile);
  lua_setfield(L, core, "http_tmpfile");
}

const ls_http_hooks_t ls_http__lua_hooks = {ls_http__dispatch, ls_http__end_request};
