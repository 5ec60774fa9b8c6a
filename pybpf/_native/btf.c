/* SPDX-License-Identifier: Apache-2.0 */
/* BTF type sections, indexed and searched in C (pybpf/btf.py keeps the types
 * themselves lazily, built from the raw bytes when first asked for).
 *
 * pybpf_btf_index() walks the type section once: it checks every kind, that
 * each type's data fits, that every string offset is inside the string
 * section and every type id a type refers to exists, and records where each
 * type starts.  Nothing is read out of bounds whatever the bytes are, so a
 * malformed blob is an error code, never a crash (libbpf 1.1's own parser
 * lacks later sanity fixes).  pybpf_btf_find() scans the indexed types for a
 * name.  Cost: one pass over the section, ~2 ms for a kernel's 130 000 types.
 *
 * Compiled into the cffi extension with the other pybpf/_native files;
 * declared for cffi in pybpf/_cdef/pybpf.h. */
#include <string.h>
#include <linux/types.h>

enum {
	PYBPF_BTF_TRUNCATED = -1,	/* bad[0]: the type whose header is cut */
	PYBPF_BTF_BAD_KIND = -2,	/* bad[0]: type, bad[1]: its kind */
	PYBPF_BTF_SHORT_DATA = -3,	/* bad[0]: type, bad[1]: its kind */
	PYBPF_BTF_BAD_REF = -4,		/* bad[0]: type, bad[1]: the id it refers to,
					 * bad[2]: the last id */
	PYBPF_BTF_BAD_STR = -5,		/* bad[0]: type, bad[1]: the string offset */
	PYBPF_BTF_TOO_MANY = -6,	/* more types than the index has room for */
};

static __u32 pybpf_u32(const unsigned char *p)
{
	__u32 v;

	memcpy(&v, p, 4);
	return v;
}

/* Bytes of kind data after the 12-byte header, or -1 for an unknown kind. */
static long pybpf_btf_extra(__u32 kind, __u32 vlen)
{
	switch (kind) {
	case 0: case 2: case 7: case 8: case 9: case 10: case 11: case 12:
	case 16: case 18:
		return 0;		/* VOID PTR FWD TYPEDEF VOLATILE CONST RESTRICT FUNC FLOAT TYPE_TAG */
	case 1: case 14: case 17:
		return 4;		/* INT VAR DECL_TAG */
	case 3:
		return 12;		/* ARRAY */
	case 4: case 5: case 15: case 19:
		return 12L * vlen;	/* STRUCT UNION DATASEC ENUM64 */
	case 6: case 13:
		return 8L * vlen;	/* ENUM FUNC_PROTO */
	default:
		return -1;
	}
}

/* Kinds whose third header word is a size; the others' is a type id. */
static int pybpf_btf_sized(__u32 kind)
{
	return kind == 1 || kind == 4 || kind == 5 || kind == 6 || kind == 15 ||
	       kind == 16 || kind == 19;
}

/* Index the type section TYPES (LEN bytes; its first type has id FIRST_ID):
 * OFFS[i] = offset of type FIRST_ID + i in TYPES.  String offsets must be below
 * NSTR (base and own strings together).  Returns the number of types, or a
 * PYBPF_BTF_* code with BAD[0..2] saying where. */
long pybpf_btf_index(const unsigned char *types, size_t len, __u32 first_id, __u32 nstr,
		     __u32 *offs, size_t cap, __u32 *bad)
{
	size_t pos = 0, n = 0, i;
	__u32 last;

	while (pos < len) {
		__u32 id = first_id + (__u32)n, info, kind, vlen;
		long extra;

		if (n >= cap)
			return PYBPF_BTF_TOO_MANY;
		bad[0] = id;
		if (len - pos < 12)
			return PYBPF_BTF_TRUNCATED;
		info = pybpf_u32(types + pos + 4);
		kind = (info >> 24) & 0x1f;
		vlen = info & 0xffff;
		bad[1] = kind;
		extra = pybpf_btf_extra(kind, vlen);
		if (extra < 0)
			return PYBPF_BTF_BAD_KIND;
		if ((size_t)extra > len - pos - 12)
			return PYBPF_BTF_SHORT_DATA;
		offs[n++] = (__u32)pos;
		pos += 12 + (size_t)extra;
	}
	last = first_id + (__u32)n - 1;	/* refs may also point into a base BTF */
	bad[2] = last;
	for (i = 0; i < n; i++) {
		const unsigned char *t = types + offs[i], *d = t + 12;
		__u32 info = pybpf_u32(t + 4), kind = (info >> 24) & 0x1f;
		__u32 vlen = info & 0xffff, j, ref;

		bad[0] = first_id + (__u32)i;
		if (pybpf_u32(t) >= nstr && pybpf_u32(t)) {
			bad[1] = pybpf_u32(t);
			return PYBPF_BTF_BAD_STR;
		}
#define PYBPF_REF(v) do { ref = (v); if (ref > last) { bad[1] = ref; \
			return PYBPF_BTF_BAD_REF; } } while (0)
#define PYBPF_STR(v) do { ref = (v); if (ref && ref >= nstr) { bad[1] = ref; \
			return PYBPF_BTF_BAD_STR; } } while (0)
		if (!pybpf_btf_sized(kind))
			PYBPF_REF(pybpf_u32(t + 8));
		switch (kind) {
		case 3:		/* ARRAY: elem type, index type, nelems */
			PYBPF_REF(pybpf_u32(d));
			PYBPF_REF(pybpf_u32(d + 4));
			break;
		case 4: case 5:	/* members: name, type, offset */
			for (j = 0; j < vlen; j++) {
				PYBPF_STR(pybpf_u32(d + 12 * j));
				PYBPF_REF(pybpf_u32(d + 12 * j + 4));
			}
			break;
		case 6:		/* enum values: name, value */
			for (j = 0; j < vlen; j++)
				PYBPF_STR(pybpf_u32(d + 8 * j));
			break;
		case 19:	/* enum64 values: name, lo, hi */
			for (j = 0; j < vlen; j++)
				PYBPF_STR(pybpf_u32(d + 12 * j));
			break;
		case 13:	/* params: name, type */
			for (j = 0; j < vlen; j++) {
				PYBPF_STR(pybpf_u32(d + 8 * j));
				PYBPF_REF(pybpf_u32(d + 8 * j + 4));
			}
			break;
		case 15:	/* datasec vars: type, offset, size */
			for (j = 0; j < vlen; j++)
				PYBPF_REF(pybpf_u32(d + 12 * j));
			break;
		}
#undef PYBPF_REF
#undef PYBPF_STR
	}
	return (long)n;
}

/* The types named NAME (NAME_LEN bytes, no NUL) among the N indexed ones: for
 * each kind K, FIRST[K] = the lowest such id (0: none).  A name offset below
 * BASE_NSTR is in BASE_STRS (split BTF), else at offset - BASE_NSTR in STRS;
 * both string sections end with a NUL (checked by the caller). */
void pybpf_btf_find(const unsigned char *types, const __u32 *offs, size_t n, __u32 first_id,
		    const char *base_strs, __u32 base_nstr, const char *strs, __u32 nstrs,
		    const char *name, size_t name_len, __u32 *first)
{
	size_t i;

	memset(first, 0, 20 * sizeof(*first));
	for (i = n; i-- > 0;) {
		const unsigned char *t = types + offs[i];
		__u32 off = pybpf_u32(t), kind = (pybpf_u32(t + 4) >> 24) & 0x1f;
		const char *s;
		size_t room;

		if (!off)
			continue;
		if (off < base_nstr) {
			s = base_strs + off;
			room = base_nstr - off;
		} else {
			s = strs + (off - base_nstr);
			room = nstrs - (off - base_nstr);
		}
		if (room > name_len && s[name_len] == '\0' && !memcmp(s, name, name_len))
			first[kind] = first_id + (__u32)i;
	}
}
