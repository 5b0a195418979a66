/*
 * Small helpers: allocation that never fails, bounded number parsing,
 * clocks, constant-time comparison, randomness, directory creation.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/random.h>
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"

/* malloc that exits on failure. */
void *
xmalloc(size_t size)
{
	void	*p;

	if (size == 0)
		size = 1;
	if ((p = malloc(size)) == NULL)
		fatalx("xmalloc: out of memory (%zu bytes)", size);
	return p;
}

static void *(*volatile xcalloc_zero)(void *, int, size_t) = memset;

/* calloc that exits on failure or overflow. */
void *
xcalloc(size_t nmemb, size_t size)
{
	void	*p;

	if (nmemb == 0 || size == 0)
		nmemb = size = 1;
	/*
	 * glibc's (2.36) calloc skips its per-thread cache: a small block
	 * costs ~400 instructions that way, ~50 through malloc. Large ones
	 * stay calloc's, which need not touch pages the kernel gave zeroed.
	 * The memset goes through a volatile pointer, or the compiler makes
	 * malloc and memset one calloc again.
	 */
	if (nmemb <= 65536 / size) {
		if ((p = malloc(nmemb * size)) == NULL)
			fatalx("xcalloc: out of memory (%zu * %zu bytes)",
			    nmemb, size);
		return xcalloc_zero(p, 0, nmemb * size);
	}
	if ((p = calloc(nmemb, size)) == NULL)
		fatalx("xcalloc: out of memory (%zu * %zu bytes)", nmemb, size);
	return p;
}

/* realloc that exits on failure. */
void *
xrealloc(void *ptr, size_t size)
{
	return xreallocarray(ptr, 1, size);
}

/* reallocarray that exits on failure or overflow. */
void *
xreallocarray(void *ptr, size_t nmemb, size_t size)
{
	void	*p;
	size_t	 total;

	if (size != 0 && nmemb > SIZE_MAX / size)
		fatalx("xreallocarray: %zu * %zu overflows", nmemb, size);
	total = nmemb * size;
	if (total == 0)
		total = 1;
	if ((p = realloc(ptr, total)) == NULL)
		fatalx("xreallocarray: out of memory (%zu bytes)", total);
	return p;
}

/* strdup that exits on failure. */
char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		fatalx("xstrdup: out of memory");
	return p;
}

/* strndup that exits on failure. */
char *
xstrndup(const char *s, size_t n)
{
	char	*p;

	if ((p = strndup(s, n)) == NULL)
		fatalx("xstrndup: out of memory");
	return p;
}

/* asprintf that exits on failure; returns the length. */
int
xasprintf(char **ret, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vasprintf(ret, fmt, ap);
	va_end(ap);
	if (n == -1)
		fatalx("xasprintf: out of memory");
	return n;
}

/*
 * Convert a decimal string to a number in [minval, maxval], like OpenBSD
 * strtonum: on failure return 0 and point *errstr at "invalid",
 * "too small" or "too large"; on success *errstr is NULL.
 */
long long
strtonum_x(const char *s, long long minval, long long maxval,
    const char **errstr)
{
	long long	 ll;
	char		*ep;
	const char	*err = NULL;
	int		 saved_errno = errno;

	if (s == NULL || minval > maxval) {
		ll = 0;
		err = "invalid";
		goto done;
	}
	errno = 0;
	ll = strtoll(s, &ep, 10);
	if (s[0] == '\0' || *ep != '\0') {
		ll = 0;
		err = "invalid";
	} else if ((ll == LLONG_MIN && errno == ERANGE) || ll < minval) {
		ll = 0;
		err = "too small";
	} else if ((ll == LLONG_MAX && errno == ERANGE) || ll > maxval) {
		ll = 0;
		err = "too large";
	}
done:
	if (errstr != NULL)
		*errstr = err;
	errno = saved_errno;
	return ll;
}

/* Milliseconds since the epoch. */
int64_t
time_now_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds on a clock that never jumps, for timeouts and durations. */
int64_t
time_mono_ms(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Format ms since the epoch as "2026-11-27T10:00:00Z". */
void
time_format_rfc3339(int64_t ms, char *buf, size_t len)
{
	struct tm	tm;
	time_t		t;

	if (len == 0)
		return;
	/* Floor division so times before 1970 still round down. */
	t = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		buf[0] = '\0';
}

/*
 * Compare two byte strings without a data-dependent early exit, so the time
 * taken reveals at most whether the lengths differ, never where the bytes do.
 */
int
timingsafe_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	const volatile unsigned char	*pa = a, *pb = b;
	unsigned char			 diff = 0;
	size_t				 i;

	if (alen != blen)
		return 0;
	for (i = 0; i < alen; i++)
		diff |= pa[i] ^ pb[i];
	return diff == 0;
}

/* Fill buf from the kernel CSPRNG; there is no sane fallback, so fatal. */
void
random_bytes(void *buf, size_t len)
{
	unsigned char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		n = getrandom(p, len, 0);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			fatal("getrandom");
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Create a directory and any missing parents, each with mode. */
int
mkdir_p(const char *path, mode_t mode)
{
	struct stat	 sb;
	char		*copy, *p, saved;
	int		 ret = -1, saved_errno;

	if (path == NULL || *path == '\0') {
		errno = EINVAL;
		return -1;
	}
	copy = xstrdup(path);
	for (p = copy + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		if (*p == '/' && p[-1] == '/')
			continue;
		saved = *p;
		*p = '\0';
		if (mkdir(copy, mode) == -1) {
			/*
			 * An existing directory is fine whatever the error
			 * (EEXIST, or EACCES/EROFS on a parent we may not
			 * write but only need to traverse).
			 */
			saved_errno = errno;
			if (stat(copy, &sb) == -1) {
				errno = saved_errno;
				goto fail;
			}
			if (!S_ISDIR(sb.st_mode)) {
				errno = ENOTDIR;
				goto fail;
			}
		}
		*p = saved;
		if (*p == '\0' || p[1] == '\0')
			break;
	}
	ret = 0;
fail:
	free(copy);
	return ret;
}
