/*
 * C side of the PMDK (libpmemobj) comparison benchmarks (feature `pmdk` of ptm-benches).
 *
 * Each benchmark operation is one C function that runs a whole libpmemobj transaction the way a
 * C user writes it (begin, add_range, store, commit, end), so one FFI call covers one operation.
 * The functions use pmemobj_tx_begin with a NULL jmp_buf instead of the TX_BEGIN/TX_END macros:
 * without a jmp_buf a failing pmemobj_tx_* call aborts the transaction and returns an error,
 * which pmemobj_tx_end() then reports, so no setjmp/longjmp crosses into Rust.
 *
 * The root object is SHIM_ROOT_SIZE bytes; the benchmarks address it from its first 64-byte
 * aligned byte (PMDK only guarantees 16-byte alignment for objects), so word i of a stride-64
 * layout sits alone in its own cache line, as in the ptm benchmarks.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <libpmem.h>
#include <libpmemobj.h>

/* Returns the direct pointer of `oid` (pmemobj_direct is an inline function in the headers). */
void *
shim_direct(PMEMoid oid)
{
	return pmemobj_direct(oid);
}

/* pmem_is_pmem() on `[addr, addr + len)`: whether libpmem treats it as persistent memory
 * (cache flushes + fence) rather than as a file to msync. */
int
shim_is_pmem(const void *addr, size_t len)
{
	return pmem_is_pmem(addr, len);
}

/*
 * One transaction that stores `val` into `n` 8-byte words of the root object at byte offsets
 * `base_off + i * stride` (i < n), after snapshotting each word with its own
 * pmemobj_tx_add_range call (all snapshots first, then all stores, as a batched ptm snapshot).
 * Returns 0 when committed, otherwise the error number of the aborted transaction.
 */
int
shim_tx_set_words(PMEMobjpool *pop, PMEMoid root, uint64_t base_off, uint64_t stride,
		  uint64_t n, uint64_t val)
{
	char *base = pmemobj_direct(root);
	if (base == NULL)
		return EINVAL;

	if (pmemobj_tx_begin(pop, NULL, TX_PARAM_NONE) != 0)
		return pmemobj_tx_end();

	for (uint64_t i = 0; i < n; i++) {
		/* On failure the transaction is already aborted. */
		if (pmemobj_tx_add_range(root, base_off + i * stride, sizeof(uint64_t)) != 0)
			return pmemobj_tx_end();
	}
	for (uint64_t i = 0; i < n; i++)
		*(uint64_t *)(base + base_off + i * stride) = val;

	pmemobj_tx_commit();
	return pmemobj_tx_end();
}

/*
 * One read-only transaction: reads the 8-byte word at byte offset `off` of the root object into
 * `*out`. Returns 0 when committed, otherwise the error number.
 */
int
shim_tx_read_word(PMEMobjpool *pop, PMEMoid root, uint64_t off, uint64_t *out)
{
	const char *base = pmemobj_direct(root);
	if (base == NULL)
		return EINVAL;

	if (pmemobj_tx_begin(pop, NULL, TX_PARAM_NONE) != 0)
		return pmemobj_tx_end();

	*out = *(const uint64_t *)(base + off);

	pmemobj_tx_commit();
	return pmemobj_tx_end();
}
