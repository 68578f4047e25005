/*
 * The public listeners' protocol layer: HTTP/1.1 upgrade, routes, and the
 * RFC 6455 session on each connection, plugged into the workers through
 * ms_handlers. Runs on each worker's thread; shares nothing across workers.
 */
#ifndef MS_NET_SERVER_H
#define MS_NET_SERVER_H

#include <stddef.h>

#include "core/worker.h"

/* Handlers for the public listeners. */
extern const ms_handlers ms_net_handlers;

/* Bytes of per-connection state the handlers keep inline in each slot. */
size_t ms_net_ext_size(void);

#endif
