#include "errors.h"

#include <uv.h>

const char *ls_strerror(int err) {
  switch (err) {
#define LS_ERRNO_MSG_(name, code, msg) \
  case LS_E##name:                     \
    return msg;
    LS_ERRNO_MAP(LS_ERRNO_MSG_)
#undef LS_ERRNO_MSG_
  default:
    return uv_strerror(err);
  }
}

const char *ls_err_name(int err) {
  switch (err) {
#define LS_ERRNO_NAME_(name, code, msg) \
  case LS_E##name:                      \
    return code;
    LS_ERRNO_MAP(LS_ERRNO_NAME_)
#undef LS_ERRNO_NAME_
  default:
    return uv_err_name(err);
  }
}
