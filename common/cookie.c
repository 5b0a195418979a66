/*
 * Cookie and query rewriting for previews: a sandbox's Set-Cookie loses
 * its Domain attributes (so it is host-only and cannot reach the other
 * sandboxes under the preview domain), and the daemon's own preview token
 * is taken out of the Cookie header and the query before a request
 * reaches the app.
 *
 * Every function reads in[0..len) and, only when something must change,
 * writes the result to out, which has room for len bytes: a result is
 * never longer than its input. Nothing is allocated. Parsing follows what
 * browsers do (RFC 6265 section 5.2): attributes are split at ';', their
 * names trimmed of spaces and tabs and compared without case.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <string.h>
#include <strings.h>

#include "common/common.h"

static int	cookie_ws(char);
static void	cookie_trim(const char *, size_t *, size_t *);

/* 1 for the whitespace RFC 6265 trims: SP and HTAB. */
static int
cookie_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* Narrow [*start, *end) of s past leading and trailing whitespace. */
static void
cookie_trim(const char *s, size_t *start, size_t *end)
{
	while (*start < *end && cookie_ws(s[*start]))
		(*start)++;
	while (*end > *start && cookie_ws(s[*end - 1]))
		(*end)--;
}

/*
 * Drop every Domain attribute of a Set-Cookie value. Returns 0 when it has
 * none (out untouched: the caller passes the header as it came), or 1 with
 * the rewritten value in out[0..*outlen): each ";...Domain=..." span
 * removed from its ';' to the next, every other byte as it was. With out
 * NULL it only tells (1: there is one to strip). out may be in.
 */
int
http_setcookie_strip_domain(const char *in, size_t len, char *out,
    size_t *outlen)
{
	const char	*semi;
	size_t		 s, e, ns, ne, o = 0, kept = 0;
	int		 found = 0;

	/* The name=value pair comes first; a "Domain=" there is a name. */
	if ((semi = memchr(in, ';', len)) == NULL)
		return (0);
	s = semi - in;
	while (s < len) {
		/* An attribute: in[s] is its ';', it runs to the next one. */
		semi = memchr(in + s + 1, ';', len - s - 1);
		e = semi != NULL ? (size_t)(semi - in) : len;
		ns = s + 1;
		ne = e;
		if ((semi = memchr(in + ns, '=', ne - ns)) != NULL)
			ne = semi - in;
		cookie_trim(in, &ns, &ne);
		if (ne - ns == 6 && strncasecmp(in + ns, "domain", 6) == 0) {
			if (out == NULL)
				return (1);
			/* Copy what was kept since the last drop. */
			memmove(out + o, in + kept, s - kept);
			o += s - kept;
			kept = e;
			found = 1;
		}
		s = e;
	}
	if (!found)
		return (0);
	memmove(out + o, in + kept, len - kept);
	*outlen = o + len - kept;
	return (1);
}

/*
 * The next cookie named name in a Cookie header value, from *pos on: 1
 * with its value in *val (pointing into in) and *pos past it, 0 when
 * there are no more.
 */
int
http_cookie_next(const char *in, size_t len, size_t *pos, const char *name,
    size_t nlen, const char **val, size_t *vlen)
{
	const char	*p;
	size_t		 s, e, ns, ne, vs;

	while (*pos < len) {
		s = *pos;
		p = memchr(in + s, ';', len - s);
		e = p != NULL ? (size_t)(p - in) : len;
		*pos = p != NULL ? e + 1 : len;
		ns = s;
		ne = e;
		cookie_trim(in, &ns, &ne);
		if ((p = memchr(in + ns, '=', ne - ns)) == NULL)
			continue;
		vs = p - in + 1;
		e = ne;
		ne = p - in;
		cookie_trim(in, &ns, &ne);
		if (ne - ns != nlen || memcmp(in + ns, name, nlen) != 0)
			continue;
		cookie_trim(in, &vs, &e);
		*val = in + vs;
		*vlen = e - vs;
		return (1);
	}
	return (0);
}

/*
 * Remove every cookie named name (case-sensitive, as cookie names are)
 * from a Cookie header value. Returns how many were removed; when any
 * were, out[0..*outlen) holds the others in their order, each with the
 * spacing it had after its ';' (*outlen 0: none are left, drop the
 * header).
 */
int
http_cookie_remove(const char *in, size_t len, const char *name,
    size_t nlen, char *out, size_t *outlen)
{
	const char	*p;
	size_t		 s = 0, e, ns, ne, o = 0;
	int		 removed = 0, pass;

	/* Pass 0 only counts, so the common case writes nothing. */
	for (pass = 0; pass < 2; pass++) {
		for (s = 0; s < len; s = e + 1) {
			p = memchr(in + s, ';', len - s);
			e = p != NULL ? (size_t)(p - in) : len;
			ns = s;
			ne = e;
			cookie_trim(in, &ns, &ne);
			if (ns == ne)
				continue;
			p = memchr(in + ns, '=', ne - ns);
			if (p != NULL) {
				size_t	ks = ns, ke = p - in;

				cookie_trim(in, &ks, &ke);
				if (ke - ks == nlen &&
				    memcmp(in + ks, name, nlen) == 0) {
					removed += pass == 0;
					continue;
				}
			}
			/*
			 * The first kept pair trimmed, each next one after a
			 * ';' with its own leading space: each had a ';'
			 * before it, so the result never outgrows the input.
			 */
			if (pass == 1 && o == 0) {
				memmove(out, in + ns, ne - ns);
				o = ne - ns;
			} else if (pass == 1) {
				out[o++] = ';';
				memmove(out + o, in + s, ne - s);
				o += ne - s;
			}
		}
		if (removed == 0)
			return (0);
	}
	*outlen = o;
	return (removed);
}

/*
 * Remove every name or name=value parameter from the query of a request
 * target. Returns how many were removed; when any were, out[0..*outlen)
 * is the target without them, the other parameters in their order (and
 * no '?' if none is left), and *val the first one's value (pointing into
 * in, not decoded; *vlen 0 for a bare name).
 */
int
http_query_remove(const char *in, size_t len, const char *name, size_t nlen,
    char *out, size_t *outlen, const char **val, size_t *vlen)
{
	const char	*q, *p;
	size_t		 qs, s, e, ke, o;
	int		 removed = 0, pass;

	if ((q = memchr(in, '?', len)) == NULL)
		return (0);
	qs = q - in + 1;
	for (pass = 0; pass < 2; pass++) {
		o = qs - 1;
		if (pass == 1)
			memmove(out, in, o);
		for (s = qs; s <= len; s = e + 1) {
			p = memchr(in + s, '&', len - s);
			e = p != NULL ? (size_t)(p - in) : len;
			p = memchr(in + s, '=', e - s);
			ke = p != NULL ? (size_t)(p - in) : e;
			if (ke - s == nlen && memcmp(in + s, name, nlen) == 0) {
				if (pass == 0 && removed++ == 0) {
					*val = p != NULL ? p + 1 : in + e;
					*vlen = p != NULL ? e - ke - 1 : 0;
				}
				continue;
			}
			if (pass == 1 && e > s) {
				out[o] = o == qs - 1 ? '?' : '&';
				o++;
				memmove(out + o, in + s, e - s);
				o += e - s;
			}
		}
		if (removed == 0)
			return (0);
	}
	*outlen = o;
	return (removed);
}
