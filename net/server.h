/*
 * The public listeners' protocol layer: HTTP/1.1 upgrade, identity (JWT or
 * dev mode), routes, and the RFC 6455 session on each connection, plugged
 * into the workers as a socket context per listener (ms_net_context): the
 * plain and the TLS listener share these handlers, and TLS is a property
 * of the context. Chat requests are parsed here and handed to the chat
 * core through ms_chat_hooks (net/ does not depend on shard/; main wires
 * the two). Runs on each worker's thread.
 */
#ifndef MS_NET_SERVER_H
#define MS_NET_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/worker.h"
#include "net/proto.h"
#include "tls/tls.h"

/* What the chat core does with connections; all called on the worker
 * thread that owns the connection. */
typedef struct ms_chat_hooks {
	/* /ws upgraded for user uid. */
	void (*open)(ms_worker *w, ms_conn *c, uint64_t uid);
	/* A well-formed request other than ping/auth (answered here). */
	void (*request)(ms_worker *w, ms_conn *c, const ms_req *req);
	/* After a successful auth op (answered here) replaced the token:
	 * leave what the new claims no longer allow. */
	void (*reauth)(ms_worker *w, ms_conn *c);
	/* /room (diagnostics): opened, and every message it sends. */
	void (*room_open)(ms_worker *w, ms_conn *c);
	void (*room_message)(ms_worker *w, ms_conn *c, uint8_t opcode,
			     const uint8_t *p, size_t n);
	/* A connection that was opened is going away: release everything. */
	void (*close)(ms_worker *w, ms_conn *c);
} ms_chat_hooks;

/* A public listener's configuration: its context's arg, read-only once the
 * workers start. The plain and the TLS listener each have one (usually
 * copies differing in tls); what the pointers name is shared. */
typedef struct ms_net_opts {
	ms_str secrets[2];          /* HS256 keys (rotation); none in dev mode */
	int nsecrets;
	const ms_chat_hooks *chat;  /* NULL: chat requests get a 503 reply */
	ms_tls_ctx *tls;            /* this listener speaks TLS with it; NULL: plain */
	/* Process-wide tables (exact across workers), NULL = no limit. */
	struct ms_climit *per_ip;   /* --max-conns-per-ip */
	struct ms_climit *per_user; /* --max-conns-per-user */
	struct ms_climit *per_handshake; /* --max-handshakes-per-ip (always on) */
} ms_net_opts;

/* A public listener's context: these handlers over *o (borrowed: it must
 * outlive the workers), named "tls" or "plain" by o->tls, sharing the
 * --max-conns share; the peer address of each connection is read for the
 * per-address limits unless --proxy-protocol brings it. */
ms_ctx ms_net_context(const ms_config *cfg, const ms_net_opts *o);

/* ---- for the chat core ------------------------------------------------ */

/* The user a /ws connection authenticated as. */
uint64_t ms_net_uid(ms_conn *c);
/* A pointer-sized slot the chat core owns in each connection (NULL at
 * open). */
void **ms_net_chat_slot(ms_conn *c);
/* Whether the connection's identity may join/publish to `stream`: dev mode
 * allows all; otherwise the token's streams claim (user:<sub> always). */
bool ms_net_stream_allowed(ms_conn *c, ms_str stream);
/* Whether the connection's identity may send a DM to user `to`: the
 * token's dm claim (none: anyone; dev mode has none). */
bool ms_net_dm_allowed(ms_conn *c, uint64_t to);
/* Whether c may still be sent messages: an open WebSocket that has not
 * begun closing (after our close frame, nothing but close may follow). */
bool ms_net_deliverable(ms_conn *c);
/* Requests in flight: c sent a request another worker answers (join,
 * publish, presence); its answer came back. At --max-inflight, reading
 * from c pauses until half of them are answered, so every request costs
 * its sender and no one client can fill a mailbox or another worker's
 * memory. Call _done only for the connection that sent it (by handle). */
void ms_net_request_sent(ms_worker *w, ms_conn *c);
void ms_net_request_done(ms_worker *w, ms_conn *c);
/* --create-rate: whether a join or publish c sends now may create a
 * stream; true takes one from c's bucket, and the owner's answer that it
 * created none gives it back (ms_net_not_created). Taken when sent, not
 * when the answer comes: a check without taking let every request sent
 * before the answers create on the same token (up to --max-inflight per
 * token refilled). */
bool ms_net_may_create(ms_worker *w, ms_conn *c);
void ms_net_not_created(ms_worker *w, ms_conn *c);
/* Queue one text frame (whole message). */
void ms_net_send_text(ms_worker *w, ms_conn *c, const void *p, size_t n);
/* Queue one reply or event that net/proto encoded (ms_proto_enc_*), as
 * one text frame; counted as a message out. json is copied. */
void ms_net_reply(ms_worker *w, ms_conn *c, const void *json, size_t n);
/* Close an open WebSocket with 1008 and `reason` (server API disconnect). */
void ms_net_kick(ms_worker *w, ms_conn *c, const char *reason);
/* Reply {"id":N,"ok":true} ({"ok":true} when has_id is false). */
void ms_net_send_ok(ms_worker *w, ms_conn *c, bool has_id, int64_t id);
/* Reply {"id":N,"ok":false,"error":{"code":C,"message":"M"}} (no id when
 * has_id is false). */
void ms_net_send_error(ms_worker *w, ms_conn *c, bool has_id, int64_t id,
		       int code, const char *msg);

#endif
