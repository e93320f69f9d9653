/* Stop signals for the luasrv command: SIGTERM stops gracefully (running handlers finish
 * within the runtime's grace period), SIGINT stops at once, as does any second signal.
 *
 * The loop handles the stop, but a handler that spins without yielding blocks the loop, and
 * a blocked loop cannot see a signal. So the signal handler itself keeps two promises that do
 * not depend on the loop: a second signal that arrives before the loop took the first one ends
 * the process on the spot, and every stop signal arms a backstop alarm (the grace period plus
 * a margin for SIGTERM, a short one otherwise) that ends the process if the loop has not
 * finished by then. The CPU budget usually gets there first: it stops the spinning handler
 * and the loop goes on to stop normally. Signals are per process, so this state is too. */
#ifndef LS_SIGNALS_H
#define LS_SIGNALS_H

#include "runtime.h"

/* Installs the handlers for SIGINT and SIGTERM that stop `rt`. Returns 0 or a negative code. */
int ls_signals_start(ls_runtime_t *rt);
/* Disarms the backstop, restores the default handlers and closes the loop handle (its memory
 * is the runtime's; the loop runs the close). Idempotent. */
void ls_signals_close(ls_runtime_t *rt);

#endif
