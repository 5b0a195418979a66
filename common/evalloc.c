/*
 * libevent's memory, with the blocks its buffers read into kept for reuse.
 *
 * Every read on a relay takes a fresh evbuffer chain and the write that
 * empties it frees the chain again: two 16 KiB blocks per WebSocket echo,
 * even for 100 bytes. glibc serves blocks that large from its bins, not
 * from its per-thread cache, at about 400 instructions a malloc and free
 * pair: callgrind put malloc and free at 18% of the daemon's instructions
 * in the bench's ws:64:100b case. So power-of-two blocks from 1 KiB to
 * 128 KiB (libevent rounds a chain up to one) go onto a short list per
 * size when freed, and come back from it; everything else is malloc's.
 * The lists are bounded (EVALLOC_KEEP per size, at most EVALLOC_KEEP_BYTES
 * each), so a quiet daemon holds at most a few MiB more than malloc would.
 *
 * libevent's free gives no size: each block carries it in a 16-byte header
 * (16 keeps malloc's alignment). So what libevent hands its caller to free
 * (evbuffer_readln's line) goes back with ev_free, never free(3). The
 * daemon is one thread. Not under AddressSanitizer, where reusing a block
 * would hide a use-after-free.
 */
#include <sys/types.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common.h"

#define EVALLOC_HEADER		16
/*
 * From 1 KiB, libevent's smallest chain: the header would put it just past
 * the largest size glibc's thread cache takes (1,032 bytes).
 */
#define EVALLOC_MIN_SHIFT	10	/* 1 KiB */
#define EVALLOC_MAX_SHIFT	17	/* 128 KiB */
#define EVALLOC_KEEP		32
#define EVALLOC_KEEP_BYTES	(1024 * 1024)

struct evalloc_free {
	struct evalloc_free	*next;
};

static struct {
	struct evalloc_free	*head;
	unsigned int		 count;
} evalloc_lists[EVALLOC_MAX_SHIFT - EVALLOC_MIN_SHIFT + 1];
static int	evalloc_on;

/* The list for a block of size, or -1 if it is not one of the kept sizes. */
static int
evalloc_class(size_t size)
{
	int	shift;

	if (size < (1U << EVALLOC_MIN_SHIFT) ||
	    size > (1U << EVALLOC_MAX_SHIFT) || (size & (size - 1)) != 0)
		return -1;
	shift = __builtin_ctzl(size);
	return shift - EVALLOC_MIN_SHIFT;
}

static unsigned int
evalloc_keep(int class)
{
	size_t	size = (size_t)1 << (class + EVALLOC_MIN_SHIFT);

	return EVALLOC_KEEP_BYTES / size < EVALLOC_KEEP ?
	    EVALLOC_KEEP_BYTES / size : EVALLOC_KEEP;
}

/* The block's start, past the header that holds its size. */
static void *
evalloc_user(unsigned char *block, size_t size)
{
	memcpy(block, &size, sizeof size);
	return block + EVALLOC_HEADER;
}

static void *
evalloc_malloc(size_t size)
{
	struct evalloc_free	*f;
	unsigned char		*block;
	int			 class;

	if ((class = evalloc_class(size)) != -1 &&
	    (f = evalloc_lists[class].head) != NULL) {
		evalloc_lists[class].head = f->next;
		evalloc_lists[class].count--;
		return evalloc_user((unsigned char *)f, size);
	}
	if (size > SIZE_MAX - EVALLOC_HEADER ||
	    (block = malloc(size + EVALLOC_HEADER)) == NULL)
		return NULL;
	return evalloc_user(block, size);
}

static void
evalloc_free(void *p)
{
	struct evalloc_free	*f;
	unsigned char		*block;
	size_t			 size;
	int			 class;

	if (p == NULL)
		return;
	block = (unsigned char *)p - EVALLOC_HEADER;
	memcpy(&size, block, sizeof size);
	if ((class = evalloc_class(size)) != -1 &&
	    evalloc_lists[class].count < evalloc_keep(class)) {
		f = (struct evalloc_free *)block;
		f->next = evalloc_lists[class].head;
		evalloc_lists[class].head = f;
		evalloc_lists[class].count++;
		return;
	}
	free(block);
}

static void *
evalloc_realloc(void *p, size_t size)
{
	unsigned char	*block;

	if (p == NULL)
		return evalloc_malloc(size);
	if (size > SIZE_MAX - EVALLOC_HEADER)
		return NULL;
	block = realloc((unsigned char *)p - EVALLOC_HEADER,
	    size + EVALLOC_HEADER);
	if (block == NULL)
		return NULL;
	return evalloc_user(block, size);
}

/* Give libevent the allocator above; before any other libevent call. */
void
evalloc_init(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return;
#endif
#endif
	event_set_mem_functions(evalloc_malloc, evalloc_realloc, evalloc_free);
	evalloc_on = 1;
}

/* Free what libevent allocated for its caller (evbuffer_readln's line). */
void
ev_free(void *p)
{
	if (evalloc_on)
		evalloc_free(p);
	else
		free(p);
}

/* 1 if libevent allocates through the lists (not under ASan). */
int
evalloc_enabled(void)
{
	return evalloc_on;
}

/* The bytes the lists hold now. */
size_t
evalloc_kept_bytes(void)
{
	size_t	i, n = 0;

	for (i = 0; i < nitems(evalloc_lists); i++)
		n += (size_t)evalloc_lists[i].count << (i + EVALLOC_MIN_SHIFT);
	return n;
}

/* Give the kept blocks back (at exit, so leak checkers see none). */
void
evalloc_release(void)
{
	struct evalloc_free	*f;
	size_t			 i;

	for (i = 0; i < nitems(evalloc_lists); i++) {
		while ((f = evalloc_lists[i].head) != NULL) {
			evalloc_lists[i].head = f->next;
			free(f);
		}
		evalloc_lists[i].count = 0;
	}
}
