/* Logging: errors and warnings on stderr with a timestamp and level; `--quiet` silences
 * info. One process-wide setting, since the process has one stderr. */
#ifndef LS_LOG_H
#define LS_LOG_H

typedef enum { LS_LOG_DEBUG, LS_LOG_INFO, LS_LOG_WARN, LS_LOG_ERROR } ls_log_level_t;

void ls_log_set_level(ls_log_level_t min);
/* A word put before every message of this process ("worker 2"), or "" for none. */
void ls_log_set_tag(const char *tag);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void ls_log(ls_log_level_t level, const char *fmt, ...);
/* Logs a message that may hold NULs or lack a terminator. */
void ls_log_msg(ls_log_level_t level, const char *msg, size_t len);

#endif
