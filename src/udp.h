/* UDP for Lua: srv.udp.listen (a datagram server whose handler runs in a task per datagram),
 * srv.udp.socket (a client socket with sendto/recvfrom, optionally connected), and the peer
 * address object ("luasrv.Address") that handlers get and sock:send accepts back. */
#ifndef LS_UDP_H
#define LS_UDP_H

#include "runtime.h"

/* The largest datagram a socket takes by default, and the most recv_size may be (a UDP payload
 * is at most 65,507 bytes over IPv4, 65,527 over IPv6). A datagram larger than a socket's
 * recv_size is dropped and counted, never handed to Lua truncated. */
#define LS_UDP_RECV_SIZE (64 * 1024)
/* Handler tasks of one listener that may be running (waiting) at once; more datagrams are
 * dropped and counted until some finish. */
#define LS_UDP_MAX_PENDING 1024
/* Bytes that may wait in a socket's user-space send queue when the kernel's is full; a send
 * beyond that fails with ENOBUFS instead of growing memory. */
#define LS_UDP_SEND_QUEUE_MAX (1024 * 1024)

/* Adds listen, socket and address to the table on top of L (the `udp` table) and registers
 * the luasrv.UDPSocket and luasrv.Address metatables. Raises only on out of memory. */
void ls_udp_open(lua_State *L, ls_gen_t *gen);

#endif
