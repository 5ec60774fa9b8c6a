/* Test binary for uprobe_multi/uprobe session tests (tests/test_hooks_uprobe_multi.py).
 *
 *   hooks_target N1 N2 N3   calls pybpf_hook_one N1 times, pybpf_hook_two N2 times,
 *                           pybpf_hook_three N3 times (each returns its argument + 1,
 *                           + 2, + 3), then prints the sum of the results; first it
 *                           waits for a line on stdin (so a test can attach to its pid).
 */
#include <stdio.h>
#include <stdlib.h>

#define HOOK(name, add)                                        \
	__attribute__((noinline)) int name(int x)              \
	{                                                      \
		int r = x + add;                               \
		__asm__ volatile("" : "+r"(r));                \
		return r;                                      \
	}

HOOK(pybpf_hook_one, 1)
HOOK(pybpf_hook_two, 2)
HOOK(pybpf_hook_three, 3)

int main(int argc, char **argv)
{
	long sum = 0;
	int i, n;
	char line[8];

	if (!fgets(line, sizeof(line), stdin))
		return 1;

	for (i = 0, n = argc > 1 ? atoi(argv[1]) : 1; i < n; i++)
		sum += pybpf_hook_one(i);
	for (i = 0, n = argc > 2 ? atoi(argv[2]) : 1; i < n; i++)
		sum += pybpf_hook_two(i);
	for (i = 0, n = argc > 3 ? atoi(argv[3]) : 1; i < n; i++)
		sum += pybpf_hook_three(i);
	printf("%ld\n", sum);
	return 0;
}
