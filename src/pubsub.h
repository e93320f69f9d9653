/* srv.pubsub: publish a message on a topic; every subscription to the topic, in every worker,
 * gets it.
 *
 * In one process a publish hands one reference-counted copy of the message to each local
 * subscription's queue. Under --workers the master maps a ring in shared memory before it
 * forks and makes one eventfd per worker: a publish also appends the message to the ring and
 * pokes the other workers' eventfds; a worker with subscriptions reads the ring's new records
 * on its loop and delivers them locally. Nobody blocks on anybody: a worker that falls a whole
 * ring behind loses the oldest records and counts them.
 *
 * Each subscription's queue holds at most `queue` messages (default 256). When it is full the
 * oldest message is dropped and counted (sub:dropped()), or, with on_full = "close", the
 * subscription closes. */
#ifndef LS_PUBSUB_H
#define LS_PUBSUB_H

#include <lua.h>
#include <stddef.h>

#include "runtime.h"

#define LS_PUBSUB_RING_SIZE (4 * 1024 * 1024)

/* Under --workers, before the fork: maps the ring (ring_size bytes) and makes `workers`
 * eventfds. Returns 0 or a negative errno; without it, publishing stays in the process. */
int ls_pubsub_shm_init(unsigned workers, size_t ring_size);

/* Adds core.pubsub (publish, subscribe, stats) to the table on top of L and registers the
 * luasrv.Subscription metatable. */
void ls_pubsub_open(lua_State *L, ls_gen_t *gen);

#endif
