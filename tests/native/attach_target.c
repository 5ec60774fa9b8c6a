/* Test binary for uprobe/uretprobe/USDT tests (built by tests/test_attach_user.py).
 *
 *   attach_target A B   calls pybpf_target_add(A, B), fires the USDT probe
 *                       pybpf_test:added(sum, A), prints the sum.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/sdt.h>

#ifdef PYBPF_PAD
/* Built with -DPYBPF_PAD -fno-toplevel-reorder (tests/test_uprobe_same_file.py): this
 * comes first in .text, so pybpf_target_add lies at another file offset. */
__attribute__((noinline, used)) int pybpf_pad(int x)
{
	int i;

	for (i = 0; i < 64; i++)
		__asm__ volatile("nop; nop; nop; nop; nop; nop; nop; nop" : "+r"(x));
	return x;
}
#endif

__attribute__((noinline)) int pybpf_target_add(int a, int b)
{
	int r = a + b;

	__asm__ volatile("" : "+r"(r));
	return r;
}

int main(int argc, char **argv)
{
	int a = argc > 1 ? atoi(argv[1]) : 1;
	int b = argc > 2 ? atoi(argv[2]) : 2;
	int r = pybpf_target_add(a, b);

	STAP_PROBE2(pybpf_test, added, r, a);
	printf("%d\n", r);
	return 0;
}
