// The user-space side of tests/test_foreign.py: a C++ function in a namespace (a
// mangled name to demangle, DWARF line info with -g) that calls libc's select(),
// whose alias __select sits at the same address. Waits for a line on stdin
// before and after.
#include <sys/select.h>
#include <stdio.h>

namespace pybpf_ns {
struct Worker {
	__attribute__((noinline)) static int spin(int n);
};

__attribute__((noinline)) int Worker::spin(int n)
{
	int total = 0;
	for (int i = 0; i < n; i++) {
		struct timeval tv = {0, 1000};
		total += select(0, nullptr, nullptr, nullptr, &tv);
	}
	return total;
}
}  // namespace pybpf_ns

int main()
{
	char line[16];
	puts("ready");
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 1;
	int r = pybpf_ns::Worker::spin(3);
	if (!fgets(line, sizeof line, stdin))  /* stays until told to exit */
		return 1;
	return r;
}
