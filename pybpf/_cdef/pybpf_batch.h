/* struct pybpf_batch: the buffer event records are copied into (pybpf/_cdef/pybpf.c),
 * read by Python through cffi.  One definition for both: build.py hands this file to
 * cffi's cdef and pybpf.c includes it.  Plain C that cffi parses: no guards. */
#define PYBPF_MIXED 0xffffffff
struct pybpf_batch {
	char *data;
	size_t len;
	size_t cap;
	__u32 *offs;
	__u32 *sizes;
	__u32 *tags;
	size_t n;
	size_t ncap;
	__u64 lost;
	__u64 *lost_cpu;
	int ncpu;
	__u32 fixed;		/* common record size; 0: none yet; PYBPF_MIXED: differ */
	int tags_mixed;		/* records carry different tags */
	int external;		/* data is lent by Python: never realloc()ed or freed */
	int grow;		/* when the lent buffer is full: move to a malloc()ed one */
	__u32 tag0;		/* the first record's tag */
	int lazy;		/* offs/sizes/tags not written: every record is FIXED bytes,
				 * tagged TAG0, packed from offset 0 */
};
