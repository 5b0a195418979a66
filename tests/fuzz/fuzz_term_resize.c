/*
 * libFuzzer target: term_resize_parse, what the daemon makes of a
 * terminal client's text message (the client's to choose). Whatever the
 * bytes, it answers 0 or -1, reads nothing past them, and a size it
 * accepts is 1..1000 both ways and came from a message starting "{".
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/control_int.h"
#include "tests/fuzz/fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned int	 cols = 0, rows = 0;
	uint8_t		*msg;
	int		 r;

	/* A copy exactly as long as the input: reads past it are caught. */
	msg = malloc(size > 0 ? size : 1);
	memcpy(msg, data, size);
	r = term_resize_parse(msg, size, &cols, &rows);
	FUZZ_ASSERT(r == 0 || r == -1);
	if (r == 0) {
		FUZZ_ASSERT(size > 0 && msg[0] == '{');
		FUZZ_ASSERT(cols >= 1 && cols <= 1000);
		FUZZ_ASSERT(rows >= 1 && rows <= 1000);
	}
	free(msg);
	return 0;
}
