/* CHECK(): an invariant of the code under fuzzing; a failure aborts, so that libFuzzer
 * records the input. */
#ifndef TERN_FUZZ_CHECK_H
#define TERN_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                  \
			abort();                                                         \
		}                                                                        \
	} while (0)

#endif
