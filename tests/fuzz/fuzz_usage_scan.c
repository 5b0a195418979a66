/*
 * libFuzzer target: provider_scan, the credential proxy's counter of the
 * usage fields in a provider's answer (the provider's bytes, passed
 * through as they come). Whatever the bytes, it reads nothing past them,
 * counts nothing negative, and counts the same whether the answer comes
 * whole, cut in two at any point, or one byte at a time: the proxy sees
 * it in pieces the network chose.
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
	struct provider_scan	 whole, cut, bytes;
	const char		*in;
	char			*copy;
	size_t			 at, i;

	if (size == 0)
		return 0;
	/* The first byte says where to cut; the rest is the answer. */
	at = data[0];
	size--;
	/* A copy exactly as long as the answer: reads past it are caught. */
	if ((copy = calloc(1, size > 0 ? size : 1)) == NULL)
		return 0;
	memcpy(copy, data + 1, size);
	in = copy;
	if (at > size)
		at = size;

	memset(&whole, 0, sizeof whole);
	provider_scan(&whole, in, size);
	provider_scan_end(&whole);
	memset(&cut, 0, sizeof cut);
	provider_scan(&cut, in, at);
	provider_scan(&cut, in + at, size - at);
	provider_scan_end(&cut);
	memset(&bytes, 0, sizeof bytes);
	for (i = 0; i < size && i < 4096; i++)
		provider_scan(&bytes, in + i, 1);
	if (size <= 4096) {
		provider_scan_end(&bytes);
		FUZZ_ASSERT(bytes.input == whole.input &&
		    bytes.output == whole.output);
	}
	FUZZ_ASSERT(whole.input >= 0 && whole.output >= 0);
	FUZZ_ASSERT(cut.input == whole.input && cut.output == whole.output);
	FUZZ_ASSERT(whole.klen <= PROVIDER_SCAN_KEY + 1);
	free(copy);
	return 0;
}
