/*
 * libFuzzer target for the config parser: any bytes must give either a
 * config or an error text, never a crash, a leak or a hang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Parse one input as a config file. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	*conf;
	char		*text, *errors = NULL;

	/* config_parse takes a C string; a NUL inside ends the text early. */
	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	conf = config_parse("fuzz", text, &errors);
	if ((conf == NULL) == (errors == NULL))
		abort();
	config_free(conf);
	free(errors);
	free(text);
	return 0;
}
