/*
 * Connection caps: max_connections in all and max_connections_per_ip per
 * client address, checked as a connection is accepted (before any byte is
 * read or buffered), and the descriptor limit they are derived from.
 *
 * Per-address counts live in an open-addressing hash table keyed by the
 * address (an IPv4 address, or an IPv6 /64) with a random SipHash key,
 * so that a client choosing its addresses (anyone with a /64 can) cannot
 * make the lookups collide. Only addresses with a live connection are in
 * it: a count that drops to 0 is removed (backward-shift deletion, no
 * tombstones), so its size follows the connections, not the history.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "edge/edge.h"
#include "edge/edge_int.h"

/* Descriptors kept for the daemon itself (store, Docker, logs, pipes). */
#define EDGE_FD_RESERVE		256
/* max_connections = 0: half of what is left (each may use an upstream)... */
#define EDGE_CONNS_AUTO_MIN	64
/* ...but no more than this many, whatever the descriptor limit. */
#define EDGE_CONNS_AUTO_MAX	65536
/* A refused connection is logged at warn level at most this often. */
#define EDGE_REFUSED_WARN_MS	10000
#define EDGE_IP_TABLE_MIN	64	/* slots; a power of two */

struct edge_ip_slot {
	struct edge_addr_key	 key;
	uint32_t		 count;		/* 0: the slot is free */
};

struct edge_ip_table {
	struct edge_ip_slot	*slots;
	size_t			 size;		/* a power of two */
	size_t			 used;
	uint64_t		 k0, k1;	/* SipHash key */
};

static uint64_t	edge_siphash(uint64_t, uint64_t, const uint8_t *, size_t);
static size_t	edge_ip_find(const struct edge_ip_table *,
		    const struct edge_addr_key *);
static void	edge_ip_grow(struct edge_ip_table *);
static void	edge_ip_remove(struct edge_ip_table *, size_t);
static void	edge_limit_refused(struct edge *, const char *,
		    const struct sockaddr *);
static unsigned int edge_conns_auto(uint64_t);

#define ROTL64(x, b)	(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3) do {					\
	v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);	\
	v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;			\
	v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;			\
	v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);	\
} while (0)

/* SipHash-2-4 of in[0..len) under the key (k0, k1). */
static uint64_t
edge_siphash(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
	uint64_t	v0 = 0x736f6d6570736575ULL ^ k0;
	uint64_t	v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t	v2 = 0x6c7967656e657261ULL ^ k0;
	uint64_t	v3 = 0x7465646279746573ULL ^ k1;
	uint64_t	m, b = (uint64_t)len << 56;
	size_t		i, left = len & 7;

	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&m, in + i, 8);
		v3 ^= m;
		SIPROUND(v0, v1, v2, v3);
		SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	for (m = 0; left > 0; left--)
		m |= (uint64_t)in[i + left - 1] << (8 * (left - 1));
	b |= m;
	v3 ^= b;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	for (i = 0; i < 4; i++)
		SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/*
 * The key a peer is counted under: IPv4 as its IPv4-mapped IPv6 form (so
 * ::ffff:192.0.2.1 and 192.0.2.1 are one client), other IPv6 addresses
 * by their /64.
 */
int
edge_addr_key(const struct sockaddr *sa, struct edge_addr_key *k)
{
	const struct sockaddr_in	*sin = (const void *)sa;
	const struct sockaddr_in6	*sin6 = (const void *)sa;
	static const uint8_t		 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
	    0, 0, 0xff, 0xff };

	memset(k, 0, sizeof *k);
	switch (sa->sa_family) {
	case AF_INET:
		memcpy(k->b, mapped, sizeof mapped);
		memcpy(k->b + 12, &sin->sin_addr, 4);
		return 0;
	case AF_INET6:
		if (memcmp(sin6->sin6_addr.s6_addr, mapped,
		    sizeof mapped) == 0)
			memcpy(k->b, sin6->sin6_addr.s6_addr, 16);
		else
			memcpy(k->b, sin6->sin6_addr.s6_addr, 8);
		return 0;
	default:
		return -1;
	}
}

/* The derived max_connections for a descriptor limit of nofile. */
static unsigned int
edge_conns_auto(uint64_t nofile)
{
	uint64_t	n;

	n = nofile > EDGE_FD_RESERVE ? (nofile - EDGE_FD_RESERVE) / 2 : 0;
	if (n < EDGE_CONNS_AUTO_MIN)
		n = EDGE_CONNS_AUTO_MIN;
	if (n > EDGE_CONNS_AUTO_MAX)
		n = EDGE_CONNS_AUTO_MAX;
	return (unsigned int)n;
}

/*
 * The limits in force: the config's, with edge's defaults for timeouts a
 * hand-made config left at 0. The descriptor soft limit goes up to the
 * hard one (a proxy needs two per proxied connection), and
 * max_connections = 0 is derived from it.
 */
void
edge_limit_init(struct edge *edge)
{
	const struct config	*cfg = edge->cfg;
	struct edge_limits	*lim = &edge->lim;
	struct edge_ip_table	*t;
	struct rlimit		 rl;
	uint64_t		 nofile = 1024;
	unsigned int		 fit;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur != rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
				log_warn("setrlimit RLIMIT_NOFILE %llu",
				    (unsigned long long)rl.rlim_max);
			getrlimit(RLIMIT_NOFILE, &rl);
		}
		nofile = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX :
		    (uint64_t)rl.rlim_cur;
	}
	fit = edge_conns_auto(nofile);
	if (cfg->max_connections > 0) {
		lim->max_conns = cfg->max_connections;
		if (lim->max_conns > fit && fit < EDGE_CONNS_AUTO_MAX)
			log_warnx("max_connections is more than the descriptor "
			    "limit allows\tmax_connections=%u nofile=%llu "
			    "fits=%u", lim->max_conns,
			    (unsigned long long)nofile, fit);
	} else
		lim->max_conns = fit;
	lim->max_conns_ip = cfg->max_connections_per_ip > 0 ?
	    (unsigned int)cfg->max_connections_per_ip : 0;

	lim->header_ms = cfg->header_timeout_ms > 0 ? cfg->header_timeout_ms :
	    EDGE_HEAD_TIMEOUT_MS;
	lim->keepalive_ms = cfg->keepalive_timeout_ms > 0 ?
	    cfg->keepalive_timeout_ms : EDGE_IDLE_TIMEOUT_MS;
	lim->body_ms = cfg->body_timeout_ms > 0 ? cfg->body_timeout_ms :
	    EDGE_BODY_TIMEOUT_MS;
	lim->body_rate = cfg->body_min_rate;
	lim->send_ms = cfg->send_timeout_ms > 0 ? cfg->send_timeout_ms :
	    EDGE_WRITE_TIMEOUT_S * 1000;
	lim->send_rate = cfg->send_min_rate;
	lim->response_ms = cfg->response_timeout_ms > 0 ?
	    cfg->response_timeout_ms : EDGE_RESPONSE_TIMEOUT_MS;
	lim->response_idle_ms = cfg->response_idle_timeout_ms;
	lim->tunnel_idle_ms = cfg->tunnel_idle_timeout_ms;
	log_info("connection limits\tmax_connections=%u "
	    "max_connections_per_ip=%u nofile=%llu", lim->max_conns,
	    lim->max_conns_ip, (unsigned long long)nofile);

	t = edge->ip_table = xcalloc(1, sizeof *t);
	t->size = EDGE_IP_TABLE_MIN;
	t->slots = xcalloc(t->size, sizeof *t->slots);
	random_bytes(&t->k0, sizeof t->k0);
	random_bytes(&t->k1, sizeof t->k1);
}

/* Free the table (edge_free). */
void
edge_limit_free(struct edge *edge)
{
	if (edge->ip_table == NULL)
		return;
	free(edge->ip_table->slots);
	free(edge->ip_table);
	edge->ip_table = NULL;
}

/* The slot holding k, or the free slot where it would go. */
static size_t
edge_ip_find(const struct edge_ip_table *t, const struct edge_addr_key *k)
{
	size_t	mask = t->size - 1, i;

	i = edge_siphash(t->k0, t->k1, k->b, sizeof k->b) & mask;
	while (t->slots[i].count != 0 &&
	    memcmp(&t->slots[i].key, k, sizeof *k) != 0)
		i = (i + 1) & mask;
	return i;
}

/* Double the table (kept at most half full). */
static void
edge_ip_grow(struct edge_ip_table *t)
{
	struct edge_ip_slot	*old = t->slots;
	size_t			 oldsize = t->size, i, j;

	t->size *= 2;
	t->slots = xcalloc(t->size, sizeof *t->slots);
	for (i = 0; i < oldsize; i++) {
		if (old[i].count == 0)
			continue;
		j = edge_ip_find(t, &old[i].key);
		t->slots[j] = old[i];
	}
	free(old);
}

/*
 * Empty slot i, moving back the entries after it that probed past it so
 * that every lookup still finds its key.
 */
static void
edge_ip_remove(struct edge_ip_table *t, size_t i)
{
	size_t	mask = t->size - 1, j = i, home;

	t->slots[i].count = 0;
	t->used--;
	for (;;) {
		j = (j + 1) & mask;
		if (t->slots[j].count == 0)
			return;
		home = edge_siphash(t->k0, t->k1, t->slots[j].key.b,
		    sizeof t->slots[j].key.b) & mask;
		/* Leave it if its home lies cyclically in (i, j]. */
		if (i <= j ? (home > i && home <= j) : (home > i || home <= j))
			continue;
		t->slots[i] = t->slots[j];
		t->slots[j].count = 0;
		i = j;
	}
}

/*
 * Refused: at debug level every time, at warn level at most every
 * EDGE_REFUSED_WARN_MS with the count since the last warning, so a flood
 * cannot flood the log as well.
 */
static void
edge_limit_refused(struct edge *edge, const char *cap,
    const struct sockaddr *sa)
{
	char	ip[INET6_ADDRSTRLEN];
	int64_t	now = time_mono_ms();

	ip[0] = '\0';
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)
		    sa)->sin_addr, ip, sizeof ip);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)
		    (const void *)sa)->sin6_addr, ip, sizeof ip);
	edge->refused++;
	log_debug("connection refused\tcap=%s peer=%s connections=%u", cap, ip,
	    edge->nconns);
	if (edge->refused_warned != 0 &&
	    now - edge->refused_warned < EDGE_REFUSED_WARN_MS)
		return;
	log_warnx("connections refused over a cap\tcap=%s peer=%s "
	    "refused=%lu connections=%u", cap, ip, edge->refused,
	    edge->nconns);
	edge->refused_warned = now;
	edge->refused = 0;
}

/* Count a new connection, or refuse it over a cap. */
int
edge_limit_admit(struct edge *edge, struct edge_conn *conn,
    const struct sockaddr *sa)
{
	const struct edge_limits	*lim = &edge->lim;
	struct edge_ip_table		*t = edge->ip_table;
	size_t				 i;

	if (lim->max_conns > 0 && edge->nconns >= lim->max_conns) {
		edge_limit_refused(edge, "max_connections", sa);
		return -1;
	}
	conn->counted = EDGE_COUNT_ALL;
	if (lim->max_conns_ip > 0 && edge_addr_key(sa, &conn->addr_key) == 0) {
		i = edge_ip_find(t, &conn->addr_key);
		if (t->slots[i].count >= lim->max_conns_ip) {
			conn->counted = EDGE_COUNT_NONE;
			edge_limit_refused(edge, "max_connections_per_ip", sa);
			return -1;
		}
		if (t->slots[i].count == 0) {
			if (2 * (t->used + 1) > t->size) {
				edge_ip_grow(t);
				i = edge_ip_find(t, &conn->addr_key);
			}
			t->slots[i].key = conn->addr_key;
			t->used++;
		}
		t->slots[i].count++;
		conn->counted = EDGE_COUNT_ADDR;
	}
	edge->nconns++;
	return 0;
}

/* A counted connection closes. */
void
edge_limit_release(struct edge *edge, struct edge_conn *conn)
{
	struct edge_ip_table	*t = edge->ip_table;
	size_t			 i;

	if (conn->counted == EDGE_COUNT_NONE)
		return;
	if (conn->counted == EDGE_COUNT_ADDR) {
		i = edge_ip_find(t, &conn->addr_key);
		if (t->slots[i].count > 0 && --t->slots[i].count == 0)
			edge_ip_remove(t, i);
	}
	conn->counted = EDGE_COUNT_NONE;
	edge->nconns--;
}

/* 1 if ms is the length of a timer every request or connection arms. */
static int
edge_limit_is(const struct edge *edge, int64_t ms)
{
	const struct edge_limits	*lim = &edge->lim;

	return ms == lim->header_ms || ms == lim->keepalive_ms ||
	    ms == lim->body_ms || ms == lim->send_ms ||
	    ms == lim->response_ms || ms == lim->response_idle_ms ||
	    ms == lim->tunnel_idle_ms || ms == EDGE_CONNECT_TIMEOUT_MS ||
	    ms == EDGE_HANDSHAKE_TIMEOUT_MS || ms == EDGE_COALESCE_MS;
}

/*
 * Timers of one length share one of libevent's common-timeout queues:
 * arming and clearing is then a list operation, not a heap one, and an
 * HTTP/1.1 request arms and clears two or three (callgrind: ~1,000 of its
 * 12,300 instructions went to the heap). Only the configured limits are
 * queued so, as libevent keeps a queue for good; any other length (what
 * is left of a limit) goes to the heap.
 */
const struct timeval *
edge_timeval(struct edge *edge, int64_t ms, struct timeval *tv)
{
	const struct timeval	*common;
	size_t			 i;

	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
	for (i = 0; i < edge->ncommon; i++) {
		if (edge->common[i].ms == ms)
			return edge->common[i].tv;
	}
	if (ms <= 0 || edge->ncommon == nitems(edge->common) ||
	    !edge_limit_is(edge, ms))
		return tv;
	if ((common = event_base_init_common_timeout(edge->base, tv)) == NULL)
		return tv;
	edge->common[edge->ncommon].ms = ms;
	edge->common[edge->ncommon++].tv = common;
	return common;
}
