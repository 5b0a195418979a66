/*
 * Latency histograms for GET /metrics: a few integer additions per
 * observation, written as Prometheus cumulative buckets in seconds.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/common.h"

const int64_t hist_bounds_slow[] = {
	50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 0
};
const int64_t hist_bounds_fast[] = {
	1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000, 0
};

/* Start an empty histogram over bounds (kept, not copied). */
void
hist_init(struct hist *h, const int64_t *bounds)
{
	memset(h, 0, sizeof *h);
	h->bounds = bounds;
}

/* Count one observation of ms milliseconds (negative counts as 0). */
void
hist_observe(struct hist *h, int64_t ms)
{
	int	i;

	if (ms < 0)
		ms = 0;
	for (i = 0; i < HIST_MAX && h->bounds[i] != 0; i++) {
		if (ms <= h->bounds[i])
			h->le[i]++;
	}
	h->count++;
	h->sum_ms += ms;
}

/* The buckets, +Inf, sum and count, in seconds. */
void
hist_write(const struct hist *h, struct evbuffer *out, const char *name,
    const char *labels)
{
	const char	*l = labels != NULL ? labels : "";
	const char	*sep = labels != NULL ? "," : "";
	int		 i;

	for (i = 0; i < HIST_MAX && h->bounds[i] != 0; i++)
		evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%lld.%03lld\"} "
		    "%llu\n", name, l, sep, (long long)(h->bounds[i] / 1000),
		    (long long)(h->bounds[i] % 1000),
		    (unsigned long long)h->le[i]);
	evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, l,
	    sep, (unsigned long long)h->count);
	if (labels != NULL) {
		evbuffer_add_printf(out, "%s_sum{%s} %lld.%03lld\n", name, l,
		    (long long)(h->sum_ms / 1000),
		    (long long)(h->sum_ms % 1000));
		evbuffer_add_printf(out, "%s_count{%s} %llu\n", name, l,
		    (unsigned long long)h->count);
	} else {
		evbuffer_add_printf(out, "%s_sum %lld.%03lld\n", name,
		    (long long)(h->sum_ms / 1000),
		    (long long)(h->sum_ms % 1000));
		evbuffer_add_printf(out, "%s_count %llu\n", name,
		    (unsigned long long)h->count);
	}
}
