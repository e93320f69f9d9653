/* The project's own error codes. They sit below libuv's range (libuv uses negated errno
 * values), so one int carries either kind; ls_strerror and ls_err_name name both. */
#ifndef LS_ERRORS_H
#define LS_ERRORS_H

/* X(name, code as Lua sees it, message). EOF is named as libuv names it. */
#define LS_ERRNO_MAP(X)                                   \
  X(CLOSED, "ECLOSED", "closed")                          \
  X(EOF, "EOF", "closed")                                 \
  X(TIMEDOUT, "ETIMEDOUT", "timeout")                     \
  X(LINETOOLONG, "ELINETOOLONG", "line too long")         \
  X(FRAMETOOLARGE, "EFRAMETOOLARGE", "frame too large")   \
  X(NOMEM, "ENOMEM", "out of memory")                     \
  X(TLS, "ETLS", "tls error")

enum {
  LS_ERRNO_BASE_ = -10000,
#define LS_ERRNO_ENUM_(name, code, msg) LS_E##name,
  LS_ERRNO_MAP(LS_ERRNO_ENUM_)
#undef LS_ERRNO_ENUM_
  LS_ERRNO_END_
};

/* A short message for users ("closed", "timeout", or libuv's text). */
const char *ls_strerror(int err);
/* The code's name ("ECLOSED", "EOF", "ECONNRESET", ...). */
const char *ls_err_name(int err);

#endif
