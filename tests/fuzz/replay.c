/*
 * Replay driver for the libFuzzer targets, so `make check` exercises them
 * without clang. Linked with one fuzz_*.c as tests/fuzz/replay_<target>; the
 * target's name comes from argv[0]. With no arguments it runs
 * LLVMFuzzerTestOneInput on every file of
 * $top_srcdir/tests/fuzz/corpus/<target>/ and on a fixed number of
 * deterministic pseudo-random mutations of each (same inputs on every run);
 * with arguments it runs just those files, to reproduce a crash. A crash or
 * a failed assertion in the target aborts, which fails the test by itself.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPLAY_MUTATIONS	5000		/* per seed, by default */
#define REPLAY_MAX_FILE		(1024 * 1024)
#define REPLAY_MAX_GROWTH	256		/* bytes a mutant may add */

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int	 replay_name_cmp(const void *, const void *);
static uint8_t	*replay_read(const char *, size_t *);
static void	 replay_one(const uint8_t *, size_t);
static uint64_t	 replay_rand(uint64_t *);
static size_t	 replay_mutate(uint8_t *, size_t, size_t, uint64_t *);
static size_t	 replay_seed(const char *, const uint8_t *, size_t, long);

/* Tokens worth inserting: the bytes every parser here turns on. */
static const char *const replay_tokens[] = {
	"\r\n", "\n", "\r", "\r\n\r\n", "\0", " ", "\t", ":", ": ", ",", ";",
	"=", "\"", "#", "%", "%00", "%2f", "[", "]", "{", "}", "0\r\n\r\n",
	"ffffffffffffffff", "18446744073709551616", "chunked", "gzip",
	"Content-Length: ", "Transfer-Encoding: ", "Host: ", "HTTP/1.1",
	"HTTP/1.0", "HEAD", "GET / HTTP/1.1\r\n", "HTTP/1.1 200 OK\r\n",
	"\x7f", "\x80", "\xff",
};

/* Run the target once on an exactly-sized heap copy (overreads show). */
static void
replay_one(const uint8_t *data, size_t len)
{
	uint8_t	*copy = malloc(len ? len : 1);

	if (copy == NULL) {
		perror("malloc");
		exit(1);
	}
	memcpy(copy, data, len);
	LLVMFuzzerTestOneInput(copy, len);
	free(copy);
}

/* xorshift64*: small, fixed, the same stream on every machine. */
static uint64_t
replay_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

/*
 * Apply one to four random edits to buf[0..len) (room for cap bytes):
 * bit flips, byte sets, deletions, token insertions, duplications,
 * truncation. Returns the new length.
 */
static size_t
replay_mutate(uint8_t *buf, size_t len, size_t cap, uint64_t *rs)
{
	const char	*tok;
	size_t		 i, n, at, from, tlen, edits;

	edits = 1 + replay_rand(rs) % 4;
	for (i = 0; i < edits; i++) {
		switch (replay_rand(rs) % 7) {
		case 0:		/* flip a bit */
			if (len > 0)
				buf[replay_rand(rs) % len] ^=
				    1 << (replay_rand(rs) % 8);
			break;
		case 1:		/* set a byte */
			if (len > 0)
				buf[replay_rand(rs) % len] =
				    (uint8_t)replay_rand(rs);
			break;
		case 2:		/* delete a range */
			if (len == 0)
				break;
			at = replay_rand(rs) % len;
			n = 1 + replay_rand(rs) % 8;
			if (n > len - at)
				n = len - at;
			memmove(buf + at, buf + at + n, len - at - n);
			len -= n;
			break;
		case 3:		/* insert a token */
			tok = replay_tokens[replay_rand(rs) %
			    (sizeof replay_tokens / sizeof replay_tokens[0])];
			tlen = tok[0] == '\0' ? 1 : strlen(tok);
			if (len + tlen > cap)
				break;
			at = replay_rand(rs) % (len + 1);
			memmove(buf + at + tlen, buf + at, len - at);
			memcpy(buf + at, tok, tlen);
			len += tlen;
			break;
		case 4:		/* duplicate a range elsewhere */
			if (len == 0)
				break;
			from = replay_rand(rs) % len;
			n = 1 + replay_rand(rs) % 32;
			if (n > len - from)
				n = len - from;
			if (len + n > cap)
				break;
			at = replay_rand(rs) % (len + 1);
			memmove(buf + at + n, buf + at, len - at);
			/* The source may have moved with the gap. */
			if (from >= at)
				from += n;
			memmove(buf + at, buf + from, n);
			len += n;
			break;
		case 5:		/* truncate */
			if (len > 0)
				len = replay_rand(rs) % len;
			break;
		default:	/* overwrite a byte with a token's first byte */
			tok = replay_tokens[replay_rand(rs) %
			    (sizeof replay_tokens / sizeof replay_tokens[0])];
			if (len > 0)
				buf[replay_rand(rs) % len] = (uint8_t)tok[0];
			break;
		}
	}
	return len;
}

/* Run a seed and its mutations; returns how many inputs ran. */
static size_t
replay_seed(const char *name, const uint8_t *data, size_t len, long mutations)
{
	uint64_t	 rs = 0x9e3779b97f4a7c15ULL;
	size_t		 cap = len + REPLAY_MAX_GROWTH, n, runs = 1;
	uint8_t		*buf;
	long		 i;
	const char	*p;

	/* Seeded by the file's name, so adding a seed changes no other. */
	for (p = name; *p != '\0'; p++)
		rs = (rs ^ (unsigned char)*p) * 0x100000001b3ULL;
	if (rs == 0)
		rs = 1;

	replay_one(data, len);
	if ((buf = malloc(cap)) == NULL) {
		perror("malloc");
		exit(1);
	}
	for (i = 0; i < mutations; i++) {
		memcpy(buf, data, len);
		n = replay_mutate(buf, len, cap, &rs);
		replay_one(buf, n);
		runs++;
	}
	free(buf);
	return runs;
}

/* qsort comparator for file names. */
static int
replay_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read a whole file; NULL (with a message) if it cannot. */
static uint8_t *
replay_read(const char *path, size_t *len)
{
	FILE		*f;
	struct stat	 st;
	uint8_t		*data;

	if ((f = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > REPLAY_MAX_FILE) {
		fprintf(stderr, "%s: not a regular file under 1 MiB\n", path);
		fclose(f);
		return NULL;
	}
	data = malloc(st.st_size ? st.st_size : 1);
	if (data == NULL ||
	    fread(data, 1, st.st_size, f) != (size_t)st.st_size) {
		fprintf(stderr, "%s: read failed\n", path);
		free(data);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*len = st.st_size;
	return data;
}

int
main(int argc, char **argv)
{
	const char	*base, *target, *top, *env;
	char		 dir[4096], path[8192], **names = NULL;
	struct dirent	*de;
	DIR		*d;
	size_t		 nnames = 0, i, len, runs = 0;
	uint8_t		*data;
	long		 mutations = REPLAY_MUTATIONS;
	int		 failed = 0;

	/* Reproduce mode: run exactly the files given. */
	if (argc > 1) {
		for (i = 1; i < (size_t)argc; i++) {
			if ((data = replay_read(argv[i], &len)) == NULL) {
				failed++;
				continue;
			}
			replay_one(data, len);
			free(data);
			runs++;
		}
		printf("%zu passed, %d failed\n", runs, failed);
		return failed ? 1 : 0;
	}

	base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	if (strncmp(base, "lt-", 3) == 0)
		base += 3;
	if (strncmp(base, "replay_", 7) != 0 || base[7] == '\0') {
		fprintf(stderr, "%s: run me as replay_<target>\n", argv[0]);
		return 1;
	}
	target = base + 7;
	if ((top = getenv("top_srcdir")) == NULL)
		top = ".";
	if ((env = getenv("FUZZ_REPLAY_MUTATIONS")) != NULL)
		mutations = strtol(env, NULL, 10);
	if (mutations < 0)
		mutations = 0;
	snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", top, target);

	if ((d = opendir(dir)) == NULL) {
		/* No corpus means nothing to replay, which is not a pass. */
		fprintf(stderr, "%s: %s: %s: skipped\n", base, dir,
		    strerror(errno));
		return 77;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = realloc(names, (nnames + 1) * sizeof *names);
		if (names == NULL || (names[nnames] = strdup(de->d_name)) ==
		    NULL) {
			perror("malloc");
			return 1;
		}
		nnames++;
	}
	closedir(d);
	if (nnames > 0)
		qsort(names, nnames, sizeof *names, replay_name_cmp);

	for (i = 0; i < nnames; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if ((data = replay_read(path, &len)) == NULL)
			failed++;
		else {
			runs += replay_seed(names[i], data, len, mutations);
			free(data);
		}
		free(names[i]);
	}
	free(names);
	fprintf(stderr, "%s: %zu seeds from %s, %ld mutations each\n", base,
	    nnames, dir, mutations);
	if (nnames == 0) {
		fprintf(stderr, "%s: empty corpus: skipped\n", base);
		return 77;
	}
	printf("%s: %zu passed, %d failed\n", base, runs, failed);
	return failed ? 1 : 0;
}
