/* CPU burner for the profile test: known function names, frame pointers
 * kept (-fno-omit-frame-pointer), time split between user-space work and
 * read(2)s of /dev/zero (kernel work). Usage: spin SECONDS */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 16];

__attribute__((noinline)) void pybpf_spin_leaf(volatile unsigned long *n)
{
	for (int i = 0; i < 200000; i++)
		(*n)++;
}

__attribute__((noinline)) void pybpf_spin_kernel(int fd)
{
	for (int i = 0; i < 20; i++)
		if (read(fd, buf, sizeof(buf)) < 0)
			exit(2);
}

__attribute__((noinline)) void pybpf_spin_outer(double secs)
{
	volatile unsigned long n = 0;
	struct timespec t0, t;
	int fd = open("/dev/zero", O_RDONLY);

	if (fd < 0)
		exit(2);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		pybpf_spin_leaf(&n);
		pybpf_spin_kernel(fd);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
	close(fd);
}

int main(int argc, char **argv)
{
	pybpf_spin_outer(argc > 1 ? atof(argv[1]) : 1.0);
	return 0;
}
