/*
 * libFuzzer target: the console's request side (edge/console.c). The
 * input is a flags byte (bit 0: a navigation, bit 1: the Accept-Encoding
 * check instead of If-None-Match), a request path up to the first LF,
 * and a header value after it. A path finds only a
 * file loaded under exactly that name, or index.html (for "/console/"
 * and navigations), never a .gz variant by name; nothing outside
 * /console/ is ever found; the ETag and Accept-Encoding parsers never
 * read past their input; a list that ends with the file's own ETag
 * always matches, and "gzip" after a clean list is always taken.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge/edge.h"
#include "edge/edge_int.h"
#include "tests/fuzz/fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct edge_console	*c;
	static const char		*names[] = { "index.html",
	    "assets/main-ABCDEFGH.js", "assets/main-ABCDEFGH.css",
	    "favicon.svg", "a/b/c.txt", "assets/main-ABCDEFGH.js.gz" };
	const struct edge_console_file	*f;
	enum edge_console_kind		 k;
	const char			*lf, *path, *inm;
	char				*buf, *list;
	size_t				 i, plen, ilen, elen;
	int				 nav;

	if (c == NULL) {
		c = edge_console_new("/fuzz", "default-src 'none'");
		for (i = 0; i < nitems(names); i++)
			FUZZ_ASSERT(edge_console_add(c, names[i], names[i],
			    strlen(names[i]), NULL) == 0);
		edge_console_done(c);
	}
	if (size == 0)
		return 0;
	nav = data[0] & 1;
	/* A copy of exactly the input, so a read past it is caught. */
	buf = malloc(size - 1 ? size - 1 : 1);
	memcpy(buf, data + 1, size - 1);
	path = buf;
	lf = memchr(buf, '\n', size - 1);
	plen = lf != NULL ? (size_t)(lf - buf) : size - 1;
	inm = lf != NULL ? lf + 1 : buf + plen;
	ilen = size - 1 - plen - (lf != NULL);

	k = edge_console_find(c, path, plen, nav, &f);
	if (plen < 9 || memcmp(path, "/console/", 9) != 0) {
		FUZZ_ASSERT(f == NULL);
		FUZZ_ASSERT(k == EDGE_CONSOLE_NONE ||
		    (k == EDGE_CONSOLE_REDIRECT && plen == 8));
	} else if (k == EDGE_CONSOLE_FILE) {
		FUZZ_ASSERT(f >= c->files && f < c->files + c->nfiles);
		FUZZ_ASSERT(!f->variant);
		/* Its exact name, or the page for "/console/" and routes. */
		FUZZ_ASSERT((strlen(f->name) == plen - 9 &&
		    memcmp(f->name, path + 9, plen - 9) == 0) ||
		    (f == c->index && (plen == 9 || nav)));
	} else {
		FUZZ_ASSERT(k == EDGE_CONSOLE_NONE && f == NULL && !nav);
	}
	if (data[0] & 2) {
		(void)edge_console_gzip_ok(inm, ilen);
		list = malloc(ilen + 6);
		memcpy(list, inm, ilen);
		memcpy(list + ilen, ",gzip", 5);
		/* After a list whose items all end, gzip is taken. */
		if (memchr(inm, ';', ilen) == NULL)
			FUZZ_ASSERT(edge_console_gzip_ok(list, ilen + 5));
		free(list);
		free(buf);
		return 0;
	}
	if (f != NULL)
		(void)edge_console_etag_match(inm, ilen, f->etag);
	else
		(void)edge_console_etag_match(inm, ilen, c->index->etag);

	/* value + ", " + the ETag: matches unless value broke the list. */
	elen = strlen(c->index->etag);
	list = malloc(ilen + 2 + elen);
	memcpy(list, inm, ilen);
	memcpy(list + ilen, ", ", 2);
	memcpy(list + ilen + 2, c->index->etag, elen);
	if (memchr(inm, '"', ilen) == NULL && memchr(inm, 'W', ilen) == NULL)
		for (i = 0; i < ilen && (inm[i] == ' ' || inm[i] == ',' ||
		    inm[i] == '\t'); i++)
			;
	else
		i = 0;
	if (i == ilen)
		FUZZ_ASSERT(edge_console_etag_match(list, ilen + 2 + elen,
		    c->index->etag));
	free(list);
	free(buf);
	return 0;
}
