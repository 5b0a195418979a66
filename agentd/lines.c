/*
 * Output split into lines for output events: a line is handed on with its
 * '\n' as soon as it is complete; a line that reaches AGENTD_LINE_MAX
 * without one is handed on in pieces of that size, so one endless line
 * neither grows memory nor holds up the stream.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "agentd/agentd.h"

/* Append bytes; cb gets each complete line or AGENTD_LINE_MAX piece. */
void
lines_feed(struct lines *l, const char *p, size_t n, lines_cb cb, void *arg)
{
	const char	*nl;
	size_t		 take;

	while (n > 0) {
		nl = memchr(p, '\n', n);
		take = nl != NULL ? (size_t)(nl - p) + 1 : n;
		if (l->len + take > AGENTD_LINE_MAX) {
			take = AGENTD_LINE_MAX - l->len;
			nl = NULL;
		}
		if (l->len == 0 && nl != NULL) {
			/* The common case: a whole line, no copy. */
			cb(arg, p, take);
		} else {
			if (l->size < l->len + take) {
				l->size = AGENTD_LINE_MAX;
				l->buf = xrealloc(l->buf, l->size);
			}
			memcpy(l->buf + l->len, p, take);
			l->len += take;
			if (nl != NULL || l->len == AGENTD_LINE_MAX) {
				cb(arg, l->buf, l->len);
				l->len = 0;
			}
		}
		p += take;
		n -= take;
	}
}

/* The stream ended: hand on the last, unterminated line. */
void
lines_flush(struct lines *l, lines_cb cb, void *arg)
{
	if (l->len > 0)
		cb(arg, l->buf, l->len);
	l->len = 0;
}

void
lines_free(struct lines *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = l->size = 0;
}
