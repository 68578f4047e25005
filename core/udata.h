/*
 * io_uring user_data: op kind (8 bits) | connection index (24) | generation
 * (32). Encoded and decoded only here. A completion whose generation no
 * longer matches its slot belongs to a connection that is gone: it is stale
 * and dropped (its provided buffer, if any, still goes back).
 */
#ifndef MS_CORE_UDATA_H
#define MS_CORE_UDATA_H

#include <stdint.h>

enum ms_op {
	MS_OP_NONE = 0,
	MS_OP_ACCEPT,   /* index = context of the listener */
	MS_OP_RECV,
	MS_OP_SEND,
	MS_OP_SHUTDOWN,
	MS_OP_CANCEL,
	MS_OP_CLOSE,
	MS_OP_WAKE,     /* MSG_RING doorbell */
	MS_OP_PEER,     /* getsockopt(SO_PEERNAME) of a new connection */
	MS_OP_SOCKET,   /* outbound: the socket made (direct descriptor) */
	MS_OP_CONNECT,  /* outbound: its connect */
	MS_OP_SETOPT,   /* setsockopt on a connection; completions only report failures */
};

#define MS_UDATA_IDX_MAX 0xffffffu

static inline uint64_t ms_udata(enum ms_op op, uint32_t idx, uint32_t gen)
{
	return ((uint64_t)op << 56) | ((uint64_t)(idx & MS_UDATA_IDX_MAX) << 32) | gen;
}

static inline enum ms_op ms_udata_op(uint64_t u)
{
	return (enum ms_op)(u >> 56);
}

static inline uint32_t ms_udata_idx(uint64_t u)
{
	return (uint32_t)(u >> 32) & MS_UDATA_IDX_MAX;
}

static inline uint32_t ms_udata_gen(uint64_t u)
{
	return (uint32_t)u;
}

#endif
