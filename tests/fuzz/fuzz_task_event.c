/*
 * libFuzzer target: task_event_convert, what the daemon makes of one
 * line of agentd's event stream (agentd runs inside the sandbox, so the
 * line is the sandbox's to choose). Whatever the line, a converted event
 * must have a positive seq, one of the four event names, and data that
 * is one line of valid JSON: the host log is one event a line and an
 * SSE "data:" field ends at a newline, so a CR, LF or NUL in it would
 * let a sandbox forge events for the clients that follow it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "control/control_int.h"
#include "tests/fuzz/fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object	*exitobj, *o;
	const char		*event = NULL;
	char			*out, *line;
	uint64_t		 seq = 0;
	int			 r;

	/* A copy exactly as long as the input: reads past it are caught. */
	line = malloc(size > 0 ? size : 1);
	memcpy(line, data, size);
	r = task_event_convert(line, size, &seq, &event, &out, &exitobj);
	FUZZ_ASSERT(r == -1 || r == 0 || r == 1);
	if (r != 0) {
		FUZZ_ASSERT(out == NULL && exitobj == NULL);
		free(line);
		return 0;
	}
	FUZZ_ASSERT(seq > 0 && seq < INT64_MAX);
	FUZZ_ASSERT(strcmp(event, "output") == 0 ||
	    strcmp(event, "agent") == 0 || strcmp(event, "status") == 0 ||
	    strcmp(event, "exit") == 0);
	FUZZ_ASSERT(out != NULL && strpbrk(out, "\r\n") == NULL);
	FUZZ_ASSERT((exitobj != NULL) == (strcmp(event, "exit") == 0));
	o = json_tokener_parse(out);
	FUZZ_ASSERT(o != NULL || strcmp(out, "null") == 0);
	json_object_put(o);
	json_object_put(exitobj);
	free(out);
	free(line);
	return 0;
}
