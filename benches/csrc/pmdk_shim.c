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

/* ---- Allocator benchmarks (benches/alloc.rs) ---- */

/* Largest number of blocks one shim_tx_alloc_free transaction allocates (object ids on the
 * stack). */
#define SHIM_MAX_BATCH 64
/* Type numbers of the blocks and list nodes allocated by the allocator benchmarks. */
#define SHIM_BLOCK_TYPE 1
#define SHIM_NODE_TYPE 2

/* A list node of 64 bytes, as the ptm benchmark's Node: the next pointer and a payload. */
struct shim_node {
	PMEMoid next;
	uint64_t payload[6];
};

/* Largest batch of shim_tx_alloc_free. */
uint64_t
shim_max_batch(void)
{
	return SHIM_MAX_BATCH;
}

/* sizeof(struct shim_node). */
uint64_t
shim_node_size(void)
{
	return sizeof(struct shim_node);
}

/*
 * One transaction that allocates `n` blocks of `size` bytes (pmemobj_tx_alloc, contents not
 * initialised) and then frees them all (pmemobj_tx_free), then commits. Thread-safe: it touches
 * only the calling thread's transaction and the blocks it allocates. Returns 0 when committed,
 * otherwise the error number of the aborted transaction (EINVAL if `n` is above SHIM_MAX_BATCH).
 */
int
shim_tx_alloc_free(PMEMobjpool *pop, uint64_t n, uint64_t size)
{
	PMEMoid oids[SHIM_MAX_BATCH];
	if (n > SHIM_MAX_BATCH)
		return EINVAL;

	if (pmemobj_tx_begin(pop, NULL, TX_PARAM_NONE) != 0)
		return pmemobj_tx_end();

	for (uint64_t i = 0; i < n; i++) {
		oids[i] = pmemobj_tx_alloc(size, SHIM_BLOCK_TYPE);
		/* On failure the transaction is already aborted. */
		if (OID_IS_NULL(oids[i]))
			return pmemobj_tx_end();
	}
	for (uint64_t i = 0; i < n; i++) {
		if (pmemobj_tx_free(oids[i]) != 0)
			return pmemobj_tx_end();
	}

	pmemobj_tx_commit();
	return pmemobj_tx_end();
}

/*
 * One transaction that pushes a new node on the list whose head (a PMEMoid) lies at byte offset
 * `head_off` of the root object: allocates the node (pmemobj_tx_alloc; a new object needs no
 * snapshot), initialises it with the old head and `val`, snapshots the head
 * (pmemobj_tx_add_range) and stores the node's id there. Returns 0 when committed, otherwise the
 * error number.
 */
int
shim_tx_push(PMEMobjpool *pop, PMEMoid root, uint64_t head_off, uint64_t val)
{
	char *base = pmemobj_direct(root);
	if (base == NULL)
		return EINVAL;
	PMEMoid *head = (PMEMoid *)(base + head_off);

	if (pmemobj_tx_begin(pop, NULL, TX_PARAM_NONE) != 0)
		return pmemobj_tx_end();

	PMEMoid oid = pmemobj_tx_alloc(sizeof(struct shim_node), SHIM_NODE_TYPE);
	if (OID_IS_NULL(oid))
		return pmemobj_tx_end();
	struct shim_node *node = pmemobj_direct(oid);
	node->next = *head;
	for (int i = 0; i < 6; i++)
		node->payload[i] = val;
	if (pmemobj_tx_add_range(root, head_off, sizeof(PMEMoid)) != 0)
		return pmemobj_tx_end();
	*head = oid;

	pmemobj_tx_commit();
	return pmemobj_tx_end();
}

/*
 * One transaction that pops the first node of the list whose head lies at byte offset
 * `head_off` of the root object: snapshots the head, stores the node's next pointer there, frees
 * the node (pmemobj_tx_free) and returns its first payload word in `*out`. Returns 0 when
 * committed, -1 (without a transaction) when the list is empty, otherwise the error number.
 */
int
shim_tx_pop(PMEMobjpool *pop, PMEMoid root, uint64_t head_off, uint64_t *out)
{
	char *base = pmemobj_direct(root);
	if (base == NULL)
		return EINVAL;
	PMEMoid *head = (PMEMoid *)(base + head_off);
	if (OID_IS_NULL(*head))
		return -1;

	if (pmemobj_tx_begin(pop, NULL, TX_PARAM_NONE) != 0)
		return pmemobj_tx_end();

	PMEMoid oid = *head;
	const struct shim_node *node = pmemobj_direct(oid);
	if (pmemobj_tx_add_range(root, head_off, sizeof(PMEMoid)) != 0)
		return pmemobj_tx_end();
	*head = node->next;
	*out = node->payload[0];
	if (pmemobj_tx_free(oid) != 0)
		return pmemobj_tx_end();

	pmemobj_tx_commit();
	return pmemobj_tx_end();
}

/* Number of allocated objects of the allocator benchmarks' types (blocks and nodes). */
uint64_t
shim_count_alloc_objects(PMEMobjpool *pop)
{
	uint64_t n = 0;
	for (PMEMoid oid = pmemobj_first(pop); !OID_IS_NULL(oid); oid = pmemobj_next(oid)) {
		uint64_t t = pmemobj_type_num(oid);
		if (t == SHIM_BLOCK_TYPE || t == SHIM_NODE_TYPE)
			n++;
	}
	return n;
}
