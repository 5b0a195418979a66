/*
 * A tiny unit test harness: CHECK records a failure and goes on, so one run
 * shows every broken expectation. Each test file's main calls its tests and
 * returns unit_finish(), which prints "N passed, N failed".
 */
#ifndef SBX_UNIT_H
#define SBX_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed;

#define CHECK(cond) do {						\
	if (cond)							\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		fprintf(stderr, "%s:%d: CHECK failed: %s\n",		\
		    __FILE__, __LINE__, #cond);				\
	}								\
} while (0)

#define CHECK_STR(a, b) do {						\
	const char *unit_a_ = (a), *unit_b_ = (b);			\
	if (unit_a_ != NULL && unit_b_ != NULL &&			\
	    strcmp(unit_a_, unit_b_) == 0)				\
		unit_passed++;						\
	else {								\
		unit_failed++;						\
		fprintf(stderr, "%s:%d: \"%s\" != \"%s\" (%s, %s)\n",	\
		    __FILE__, __LINE__, unit_a_ ? unit_a_ : "(null)",	\
		    unit_b_ ? unit_b_ : "(null)", #a, #b);		\
	}								\
} while (0)

#define RUN(test) do {							\
	int unit_before_ = unit_failed;					\
	test();								\
	fprintf(stderr, "%s %s\n",					\
	    unit_failed == unit_before_ ? "ok  " : "FAIL", #test);	\
} while (0)

static inline int
unit_finish(void)
{
	printf("%d passed, %d failed\n", unit_passed, unit_failed);
	return unit_failed == 0 ? 0 : 1;
}

#endif
