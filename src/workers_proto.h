/* What the --workers master (src/workers.c) and a worker (src/worker.c) say to each other.
 * Private to those two files.
 *
 * Each worker has two SOCK_SEQPACKET socket pairs with the master (message boundaries are
 * kept, and descriptors travel with SCM_RIGHTS):
 * - the request channel: the worker asks, the master answers only LS_MSG_LISTEN (with the
 *   error code and, on success, the descriptor); the worker waits for that answer;
 * - the command channel: the master sends one-byte commands, which the worker's loop reads. */
#ifndef LS_WORKERS_PROTO_H
#define LS_WORKERS_PROTO_H

#include <stdint.h>
#include <sys/socket.h>

/* Worker to master. */
enum {
  LS_MSG_LISTEN = 'L', /* ls_listen_msg_t; answered with an int32_t error and a descriptor */
  LS_MSG_READY = 'Y',  /* the first generation is committed; then as LS_MSG_SYNC */
  LS_MSG_SYNC = 'S',   /* followed by the inode numbers (uint64_t) of the sockets still held */
  LS_MSG_FILES = 'F'   /* followed by the files to watch, each ending with a NUL */
};

/* Master to worker. */
enum { LS_CMD_RELOAD = 'R', LS_CMD_STOP = 'T', LS_CMD_STOP_NOW = 'I' };

enum { LS_SOCK_TCP = 1, LS_SOCK_UDP, LS_SOCK_UNIX };

typedef struct ls_listen_msg_s {
  char type;  /* LS_MSG_LISTEN */
  char kind;  /* LS_SOCK_* */
  char scheme[14];
  /* What makes two requests the same socket: the scheme and the address as the script wrote
   * it, and for port 0 its rank among the script's port-0 listeners ("http://127.0.0.1:0#2"). */
  char id[208];
  struct sockaddr_storage addr;
  char path[108];
} ls_listen_msg_t;

/* The largest message on a request channel (a list of files). */
#define LS_MSG_MAX (64 * 1024)

/* In the child just forked: makes this process worker `id` of `count`, talking to the master
 * over the given descriptors (src/worker.c). */
void ls__worker_become(unsigned id, unsigned count, int req_fd, int cmd_fd, int report_files);

#endif
