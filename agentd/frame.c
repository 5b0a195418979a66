/*
 * The terminal's frame format, parsed without copies: type (1 byte),
 * length (4 bytes, big-endian), payload. Kept apart from pty.c so the
 * parser can be fuzzed on its own (tests/fuzz/fuzz_pty_frame.c).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "agentd/agentd.h"

/* One frame from buf: bytes consumed, PTY_FRAME_PARTIAL or -1 (bad). */
ssize_t
pty_frame_parse(const char *buf, size_t len, int *type, const char **payload,
    size_t *plen)
{
	const unsigned char	*p = (const unsigned char *)buf;
	size_t			 n;

	if (len < 5)
		return PTY_FRAME_PARTIAL;
	n = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) |
	    ((size_t)p[3] << 8) | p[4];
	/* daemon to agentd: data or resize (exactly cols, rows) only. */
	if (n > PTY_FRAME_MAX || p[0] > PTY_FRAME_RESIZE ||
	    (p[0] == PTY_FRAME_RESIZE && n != 4))
		return -1;
	if (len - 5 < n)
		return PTY_FRAME_PARTIAL;
	*type = p[0];
	*payload = buf + 5;
	*plen = n;
	return (ssize_t)(5 + n);
}
