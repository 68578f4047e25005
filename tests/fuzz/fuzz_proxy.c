/*
 * libFuzzer target for net/proxy.h: ms_proxy_parse on arbitrary bytes.
 *
 * Invariants beyond "no crash": the result is 0, -EINVAL or a length within
 * the input and the caps; a complete header's every proper prefix is "need
 * more" (what the connection's incremental re-parse relies on) and bytes
 * after it do not change the verdict; a refusal of a prefix is a refusal of
 * the whole; a parsed address has a family that matches its length.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ms_proxy_info pi;
	int r = ms_proxy_parse(data, size, &pi);
	CHECK(r == 0 || r == -EINVAL || (r > 0 && (size_t)r <= size));
	if (r > 0) {
		CHECK(r <= MS_PROXY_V2_MAX);
		CHECK(pi.version == 1 || pi.version == 2);
		if (pi.version == 1)
			CHECK(r <= MS_PROXY_V1_MAX);
		if (!pi.local)
			CHECK((pi.src.sin6_family == AF_INET && pi.src_len == sizeof(struct sockaddr_in)) ||
			      (pi.src.sin6_family == AF_INET6 && pi.src_len == sizeof(struct sockaddr_in6)));
		ms_proxy_info q;
		for (size_t k = 0; k < (size_t)r; k++)
			CHECK(ms_proxy_parse(data, k, &q) == 0);
		CHECK(ms_proxy_parse(data, (size_t)r, &q) == r);
		CHECK(q.local == pi.local && q.src_len == pi.src_len &&
		      memcmp(&q.src, &pi.src, sizeof(q.src)) == 0);
	} else if (r < 0) {
		/* Anything longer is refused too (a refusal is final). */
		uint8_t *more = malloc(size + 8);
		memcpy(more, data, size);
		memset(more + size, '\n', 8);
		CHECK(ms_proxy_parse(more, size + 8, &pi) == -EINVAL);
		free(more);
	}
	return 0;
}
