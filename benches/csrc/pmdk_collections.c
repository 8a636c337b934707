/*
 * Two u64 -> u64 maps written against PMDK's libpmemobj, as peers of ptm-collections' PHashMap
 * and PBTreeMap in the collections benchmark (feature `pmdk` of ptm-benches):
 *
 * - pcol_hm_*: a chained hash map. The map header (in the pool's root object) holds the bucket
 *   array (an object of PMEMoid heads), its length (a power of two) and the entry count. Each
 *   entry is its own 32-byte object {key, value, next}. The array doubles, inside the inserting
 *   transaction, when an insert would take the count above the bucket count (load factor 1):
 *   a new zeroed array is allocated, every entry is relinked into it (its `next` snapshotted
 *   first) and the old array freed. Removals never shrink it.
 *
 * - pcol_bt_*: a B+ tree. Nodes hold up to BT_MAX = 15 sorted keys; leaves hold the values,
 *   internal nodes BT_MAX + 1 children (PMEMoid). Inserts split full nodes on the way down
 *   (a full leaf keeps 8 entries and moves 7 to a new right sibling whose first key becomes the
 *   separator; a full internal node keeps 7 keys, moves 7 right and pushes its middle key up).
 *   Removal does NOT rebalance (ptm's PBTreeMap does: borrows, merges, root collapse, so its
 *   remove does more work): it only takes the entry out of its leaf, so leaves may become empty
 *   and stay in the tree; the separators stay valid bounds.
 *
 * Every insert and remove is one libpmemobj transaction; each range a transaction changes in an
 * existing object is snapshotted (pmemobj_tx_add_range_direct) before the store; objects
 * allocated in the same transaction are written without snapshots. Lookups read the pool
 * directly, without a transaction (as C users of libpmemobj write them). The *_batch functions
 * run many inserts/removes in one transaction, for filling and refilling outside the timed part.
 *
 * Transactions start with pmemobj_tx_begin and a NULL jmp_buf: a failing pmemobj_tx_* call
 * aborts the transaction and returns an error; the code then returns pmemobj_tx_end(), which
 * reports the error number. No setjmp/longjmp crosses into Rust. Return values: 0 on success,
 * otherwise an error number (errno values).
 *
 * Not thread-safe: a map must only be used by one thread at a time.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <libpmemobj.h>

/* Object type numbers (distinct from the allocator benchmark's 1 and 2). */
#define HM_TYPE_ENTRY 10
#define HM_TYPE_BUCKETS 11
#define BT_TYPE_NODE 12

/* Fault injection for the tests: when nonzero, the snapshot that brings it to zero aborts its
 * transaction (ECANCELED) instead of snapshotting. Per thread; 0 (off) unless a test sets it. */
static _Thread_local uint64_t fail_countdown;

/* Makes the `n`-th snapshot from now on this thread abort its transaction with ECANCELED (n = 0:
 * never). For testing that an operation aborted at any point leaves the map unchanged. */
void
pcol_fail_at_snapshot(uint64_t n)
{
	fail_countdown = n;
}

/* Snapshots `len` bytes at `p` in the running transaction; nonzero (and the transaction is
 * aborted) on failure. */
static int
snap(const void *p, size_t len)
{
	if (len == 0)
		return 0;
	if (fail_countdown != 0 && --fail_countdown == 0) {
		pmemobj_tx_abort(ECANCELED);
		return 1;
	}
	return pmemobj_tx_add_range_direct(p, len);
}

/* A map's insert or update of `key`, inside a running transaction, on its header `hdr`: sets
 * `*found` (and `*old` when found); nonzero (transaction aborted) on failure. */
typedef int (*insert_in_tx_fn)(void *hdr, uint64_t key, uint64_t val, uint64_t *old, int *found);
/* A map's removal of `key`, likewise. */
typedef int (*remove_in_tx_fn)(void *hdr, uint64_t key, uint64_t *old, int *found);

/* One transaction running `insert_one` for `keys[i] -> vals[i]`, i < n, on the map whose header
 * is `root`; `*old` and `*found` describe the last one. */
static int
tx_inserts(PMEMobjpool *pop, PMEMoid root, insert_in_tx_fn insert_one, const uint64_t *keys,
	   const uint64_t *vals, uint64_t n, uint64_t *old, int *found)
{
	void *hdr = pmemobj_direct(root);
	if (hdr == NULL)
		return EINVAL;
	if (pmemobj_tx_begin(pop, NULL, TX_PARAM_NONE) != 0)
		return pmemobj_tx_end();
	for (uint64_t i = 0; i < n; i++) {
		if (insert_one(hdr, keys[i], vals[i], old, found) != 0)
			return pmemobj_tx_end();
	}
	pmemobj_tx_commit();
	return pmemobj_tx_end();
}

/* One transaction running `remove_one` for `keys[i]`, i < n; `*old` and `*found` describe the
 * last one. */
static int
tx_removes(PMEMobjpool *pop, PMEMoid root, remove_in_tx_fn remove_one, const uint64_t *keys,
	   uint64_t n, uint64_t *old, int *found)
{
	void *hdr = pmemobj_direct(root);
	if (hdr == NULL)
		return EINVAL;
	if (pmemobj_tx_begin(pop, NULL, TX_PARAM_NONE) != 0)
		return pmemobj_tx_end();
	for (uint64_t i = 0; i < n; i++) {
		if (remove_one(hdr, keys[i], old, found) != 0)
			return pmemobj_tx_end();
	}
	pmemobj_tx_commit();
	return pmemobj_tx_end();
}

/* ==== Chained hash map ==== */

/* Initial number of buckets (a power of two). */
#define HM_MIN_BUCKETS 1024

struct hm_entry {
	uint64_t key;
	uint64_t val;
	PMEMoid next;
};

struct hm_root {
	PMEMoid buckets;   /* array of `nbuckets` PMEMoid heads, or OID_NULL before first insert */
	uint64_t nbuckets; /* power of two, 0 before the first insert */
	uint64_t count;    /* entries */
};

/* The 64-bit finalizer of MurmurHash3: spreads every key bit over the bucket index. */
static inline uint64_t
hm_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

/* Size of the map header, for pmemobj_root. */
size_t
pcol_hm_root_size(void)
{
	return sizeof(struct hm_root);
}

/* Number of entries. */
uint64_t
pcol_hm_count(PMEMoid root)
{
	const struct hm_root *r = pmemobj_direct(root);
	return r == NULL ? 0 : r->count;
}

/* Number of buckets: 0 before the first insert, then a power of two (for growth reports). */
uint64_t
pcol_hm_buckets(PMEMoid root)
{
	const struct hm_root *r = pmemobj_direct(root);
	return r == NULL ? 0 : r->nbuckets;
}

/* Points `*slot` at the link (a bucket head or an entry's `next`) that holds `key`'s entry, or
 * at the null link ending its chain. */
static PMEMoid *
hm_find(struct hm_root *r, uint64_t key)
{
	PMEMoid *b = pmemobj_direct(r->buckets);
	PMEMoid *link = &b[hm_hash(key) & (r->nbuckets - 1)];
	while (!OID_IS_NULL(*link)) {
		struct hm_entry *e = pmemobj_direct(*link);
		if (e->key == key)
			break;
		link = &e->next;
	}
	return link;
}

/* Inside a transaction: replaces the bucket array by a zeroed one of `n` buckets and relinks
 * every entry into it. Nonzero (transaction aborted) on failure. */
static int
hm_resize(struct hm_root *r, uint64_t n)
{
	PMEMoid nb_oid = pmemobj_tx_zalloc(n * sizeof(PMEMoid), HM_TYPE_BUCKETS);
	if (OID_IS_NULL(nb_oid))
		return 1;
	PMEMoid *nb = pmemobj_direct(nb_oid);
	if (r->nbuckets != 0) {
		PMEMoid *ob = pmemobj_direct(r->buckets);
		for (uint64_t i = 0; i < r->nbuckets; i++) {
			PMEMoid cur = ob[i];
			while (!OID_IS_NULL(cur)) {
				struct hm_entry *e = pmemobj_direct(cur);
				PMEMoid next = e->next;
				PMEMoid *head = &nb[hm_hash(e->key) & (n - 1)];
				if (snap(&e->next, sizeof(e->next)) != 0)
					return 1;
				e->next = *head; /* the new array needs no snapshot */
				*head = cur;
				cur = next;
			}
		}
		if (pmemobj_tx_free(r->buckets) != 0)
			return 1;
	}
	if (snap(r, offsetof(struct hm_root, count)) != 0)
		return 1;
	r->buckets = nb_oid;
	r->nbuckets = n;
	return 0;
}

/* Inside a transaction: inserts or updates `key`; sets `*found` (and `*old` when found).
 * Nonzero (transaction aborted) on failure. */
static int
hm_insert_in_tx(void *hdr, uint64_t key, uint64_t val, uint64_t *old, int *found)
{
	struct hm_root *r = hdr;
	if (r->nbuckets == 0 && hm_resize(r, HM_MIN_BUCKETS) != 0)
		return 1;
	PMEMoid *link = hm_find(r, key);
	if (!OID_IS_NULL(*link)) {
		struct hm_entry *e = pmemobj_direct(*link);
		*found = 1;
		*old = e->val;
		if (snap(&e->val, sizeof(e->val)) != 0)
			return 1;
		e->val = val;
		return 0;
	}
	*found = 0;
	if (r->count + 1 > r->nbuckets) {
		if (hm_resize(r, r->nbuckets * 2) != 0)
			return 1;
		link = hm_find(r, key);
	}
	PMEMoid oid = pmemobj_tx_alloc(sizeof(struct hm_entry), HM_TYPE_ENTRY);
	if (OID_IS_NULL(oid))
		return 1;
	struct hm_entry *e = pmemobj_direct(oid);
	e->key = key;
	e->val = val;
	e->next = OID_NULL; /* `link` is the null link at the end of the chain */
	if (snap(link, sizeof(*link)) != 0 || snap(&r->count, sizeof(r->count)) != 0)
		return 1;
	*link = oid;
	r->count++;
	return 0;
}

/* Inside a transaction: removes `key`; sets `*found` (and `*old` when found). Nonzero
 * (transaction aborted) on failure. */
static int
hm_remove_in_tx(void *hdr, uint64_t key, uint64_t *old, int *found)
{
	struct hm_root *r = hdr;
	*found = 0;
	if (r->nbuckets == 0)
		return 0;
	PMEMoid *link = hm_find(r, key);
	if (OID_IS_NULL(*link))
		return 0;
	PMEMoid oid = *link;
	struct hm_entry *e = pmemobj_direct(oid);
	*found = 1;
	*old = e->val;
	if (snap(link, sizeof(*link)) != 0 || snap(&r->count, sizeof(r->count)) != 0)
		return 1;
	*link = e->next;
	r->count--;
	return pmemobj_tx_free(oid) != 0;
}

/* One transaction: inserts or updates `key`. `*found` tells whether it was present, and then
 * `*old` holds its previous value. */
int
pcol_hm_insert(PMEMobjpool *pop, PMEMoid root, uint64_t key, uint64_t val, uint64_t *old,
	       int *found)
{
	return tx_inserts(pop, root, hm_insert_in_tx, &key, &val, 1, old, found);
}

/* One transaction: removes `key`. `*found` tells whether it was present, and then `*old` holds
 * its value. */
int
pcol_hm_remove(PMEMobjpool *pop, PMEMoid root, uint64_t key, uint64_t *old, int *found)
{
	return tx_removes(pop, root, hm_remove_in_tx, &key, 1, old, found);
}

/* Looks `key` up without a transaction: 1 and `*val` set when present, else 0. */
int
pcol_hm_get(PMEMoid root, uint64_t key, uint64_t *val)
{
	struct hm_root *r = pmemobj_direct(root);
	if (r == NULL || r->nbuckets == 0)
		return 0;
	PMEMoid *link = hm_find(r, key);
	if (OID_IS_NULL(*link))
		return 0;
	*val = ((const struct hm_entry *)pmemobj_direct(*link))->val;
	return 1;
}

/* One transaction inserting (or updating) `keys[i] -> vals[i]` for i < n. */
int
pcol_hm_insert_batch(PMEMobjpool *pop, PMEMoid root, const uint64_t *keys, const uint64_t *vals,
		     uint64_t n)
{
	uint64_t old;
	int found;
	return tx_inserts(pop, root, hm_insert_in_tx, keys, vals, n, &old, &found);
}

/* One transaction removing `keys[i]` for i < n (absent keys are skipped). */
int
pcol_hm_remove_batch(PMEMobjpool *pop, PMEMoid root, const uint64_t *keys, uint64_t n)
{
	uint64_t old;
	int found;
	return tx_removes(pop, root, hm_remove_in_tx, keys, n, &old, &found);
}

/*
 * Checks the structure: the bucket count is 0 or a power of two, every entry sits in the chain
 * of its hash, no key appears twice in a chain, and the entries number `count`. Copies up to
 * `cap` entries into `keys`/`vals` (bucket order) and sets `*n` to the number of entries seen.
 * Returns 0 when consistent, EINVAL otherwise.
 */
int
pcol_hm_check(PMEMoid root, uint64_t *keys, uint64_t *vals, uint64_t cap, uint64_t *n)
{
	const struct hm_root *r = pmemobj_direct(root);
	*n = 0;
	if (r == NULL)
		return EINVAL;
	if (r->nbuckets == 0)
		return (r->count == 0 && OID_IS_NULL(r->buckets)) ? 0 : EINVAL;
	if ((r->nbuckets & (r->nbuckets - 1)) != 0)
		return EINVAL;
	const PMEMoid *b = pmemobj_direct(r->buckets);
	if (b == NULL)
		return EINVAL;
	for (uint64_t i = 0; i < r->nbuckets; i++) {
		for (PMEMoid cur = b[i]; !OID_IS_NULL(cur);) {
			const struct hm_entry *e = pmemobj_direct(cur);
			if (e == NULL || (hm_hash(e->key) & (r->nbuckets - 1)) != i)
				return EINVAL;
			for (PMEMoid o = e->next; !OID_IS_NULL(o);) {
				const struct hm_entry *f = pmemobj_direct(o);
				if (f->key == e->key)
					return EINVAL;
				o = f->next;
			}
			if (*n < cap) {
				keys[*n] = e->key;
				vals[*n] = e->val;
			}
			(*n)++;
			if (*n > r->count)
				return EINVAL;
			cur = e->next;
		}
	}
	return *n == r->count ? 0 : EINVAL;
}

/* ==== B+ tree ==== */

/* Most keys in a node. */
#define BT_MAX 15
/* Deepest tree the checker accepts (a deeper one is corrupt). */
#define BT_MAX_DEPTH 48

struct bt_node {
	uint64_t n;    /* keys in use */
	uint64_t leaf; /* 1 for a leaf */
	uint64_t keys[BT_MAX];
	union {
		uint64_t vals[BT_MAX];     /* leaves: vals[i] belongs to keys[i] */
		PMEMoid kids[BT_MAX + 1]; /* internal: keys of kids[i] lie in [keys[i-1], keys[i]) */
	} u;
};

struct bt_root {
	PMEMoid top; /* OID_NULL while the tree is empty */
	uint64_t count;
};

/* Size of the tree header, for pmemobj_root. */
size_t
pcol_bt_root_size(void)
{
	return sizeof(struct bt_root);
}

/* Number of entries. */
uint64_t
pcol_bt_count(PMEMoid root)
{
	const struct bt_root *r = pmemobj_direct(root);
	return r == NULL ? 0 : r->count;
}

/* Index of the first key of `nd` that is >= `key` (nd->n if none). */
static uint64_t
bt_lower(const struct bt_node *nd, uint64_t key)
{
	uint64_t lo = 0, hi = nd->n;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (nd->keys[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Index of the child of internal node `nd` whose range holds `key`: the number of keys <= it. */
static uint64_t
bt_child(const struct bt_node *nd, uint64_t key)
{
	uint64_t i = bt_lower(nd, key);
	return (i < nd->n && nd->keys[i] == key) ? i + 1 : i;
}

/* Inside a transaction: a new node (not yet reachable, so written without snapshots). */
static struct bt_node *
bt_new(PMEMoid *oid, int leaf)
{
	*oid = pmemobj_tx_alloc(sizeof(struct bt_node), BT_TYPE_NODE);
	if (OID_IS_NULL(*oid))
		return NULL;
	struct bt_node *nd = pmemobj_direct(*oid);
	nd->n = 0;
	nd->leaf = (uint64_t)leaf;
	return nd;
}

/* Inside a transaction: splits the full child `i` of the non-full internal node `p` into two
 * and inserts the separator into `p`. Nonzero (transaction aborted) on failure. */
static int
bt_split_child(struct bt_node *p, uint64_t i)
{
	struct bt_node *c = pmemobj_direct(p->u.kids[i]);
	PMEMoid roid;
	struct bt_node *rt = bt_new(&roid, (int)c->leaf);
	if (rt == NULL)
		return 1;
	uint64_t sep;
	uint64_t keep;
	if (c->leaf) {
		keep = (BT_MAX + 1) / 2; /* 8 stay, 7 move */
		rt->n = BT_MAX - keep;
		memcpy(rt->keys, &c->keys[keep], rt->n * sizeof(uint64_t));
		memcpy(rt->u.vals, &c->u.vals[keep], rt->n * sizeof(uint64_t));
		sep = rt->keys[0];
	} else {
		keep = BT_MAX / 2; /* 7 stay, the 8th moves up, 7 move right */
		rt->n = BT_MAX - keep - 1;
		sep = c->keys[keep];
		memcpy(rt->keys, &c->keys[keep + 1], rt->n * sizeof(uint64_t));
		memcpy(rt->u.kids, &c->u.kids[keep + 1], (rt->n + 1) * sizeof(PMEMoid));
	}
	/* The moved entries stay in `c` beyond its new length: only its length changes. */
	if (snap(&c->n, sizeof(c->n)) != 0)
		return 1;
	c->n = keep;

	uint64_t tail = p->n - i;
	if (snap(&p->n, sizeof(p->n)) != 0 || snap(&p->keys[i], (tail + 1) * sizeof(uint64_t)) != 0 ||
	    snap(&p->u.kids[i + 1], (tail + 1) * sizeof(PMEMoid)) != 0)
		return 1;
	memmove(&p->keys[i + 1], &p->keys[i], tail * sizeof(uint64_t));
	memmove(&p->u.kids[i + 2], &p->u.kids[i + 1], tail * sizeof(PMEMoid));
	p->keys[i] = sep;
	p->u.kids[i + 1] = roid;
	p->n++;
	return 0;
}

/* Inside a transaction: inserts or updates `key`; sets `*found` (and `*old` when found).
 * Nonzero (transaction aborted) on failure. */
static int
bt_insert_in_tx(void *hdr, uint64_t key, uint64_t val, uint64_t *old, int *found)
{
	struct bt_root *r = hdr;
	*found = 0;
	if (OID_IS_NULL(r->top)) {
		PMEMoid oid;
		struct bt_node *leaf = bt_new(&oid, 1);
		if (leaf == NULL || snap(&r->top, sizeof(r->top)) != 0)
			return 1;
		r->top = oid;
	}
	struct bt_node *nd = pmemobj_direct(r->top);
	if (nd->n == BT_MAX) {
		/* A full top node: a new top above it, then split it as its only child. */
		PMEMoid oid;
		struct bt_node *top = bt_new(&oid, 0);
		if (top == NULL)
			return 1;
		top->u.kids[0] = r->top;
		if (bt_split_child(top, 0) != 0 || snap(&r->top, sizeof(r->top)) != 0)
			return 1;
		r->top = oid;
		nd = top;
	}
	while (!nd->leaf) {
		uint64_t i = bt_child(nd, key);
		const struct bt_node *c = pmemobj_direct(nd->u.kids[i]);
		if (c->n == BT_MAX) {
			if (bt_split_child(nd, i) != 0)
				return 1;
			if (key >= nd->keys[i])
				i++;
		}
		nd = pmemobj_direct(nd->u.kids[i]);
	}
	uint64_t pos = bt_lower(nd, key);
	if (pos < nd->n && nd->keys[pos] == key) {
		*found = 1;
		*old = nd->u.vals[pos];
		if (snap(&nd->u.vals[pos], sizeof(uint64_t)) != 0)
			return 1;
		nd->u.vals[pos] = val;
		return 0;
	}
	uint64_t tail = nd->n - pos;
	if (snap(&nd->n, sizeof(nd->n)) != 0 || snap(&nd->keys[pos], (tail + 1) * sizeof(uint64_t)) != 0 ||
	    snap(&nd->u.vals[pos], (tail + 1) * sizeof(uint64_t)) != 0 ||
	    snap(&r->count, sizeof(r->count)) != 0)
		return 1;
	memmove(&nd->keys[pos + 1], &nd->keys[pos], tail * sizeof(uint64_t));
	memmove(&nd->u.vals[pos + 1], &nd->u.vals[pos], tail * sizeof(uint64_t));
	nd->keys[pos] = key;
	nd->u.vals[pos] = val;
	nd->n++;
	r->count++;
	return 0;
}

/* The leaf whose range holds `key`, or NULL for an empty tree. */
static struct bt_node *
bt_leaf(const struct bt_root *r, uint64_t key)
{
	if (OID_IS_NULL(r->top))
		return NULL;
	struct bt_node *nd = pmemobj_direct(r->top);
	while (!nd->leaf)
		nd = pmemobj_direct(nd->u.kids[bt_child(nd, key)]);
	return nd;
}

/* Inside a transaction: removes `key` from its leaf (no rebalancing); sets `*found` (and `*old`
 * when found). Nonzero (transaction aborted) on failure. */
static int
bt_remove_in_tx(void *hdr, uint64_t key, uint64_t *old, int *found)
{
	struct bt_root *r = hdr;
	*found = 0;
	struct bt_node *nd = bt_leaf(r, key);
	if (nd == NULL)
		return 0;
	uint64_t pos = bt_lower(nd, key);
	if (pos == nd->n || nd->keys[pos] != key)
		return 0;
	*found = 1;
	*old = nd->u.vals[pos];
	uint64_t tail = nd->n - pos - 1;
	if (snap(&nd->n, sizeof(nd->n)) != 0 || snap(&nd->keys[pos], tail * sizeof(uint64_t)) != 0 ||
	    snap(&nd->u.vals[pos], tail * sizeof(uint64_t)) != 0 ||
	    snap(&r->count, sizeof(r->count)) != 0)
		return 1;
	memmove(&nd->keys[pos], &nd->keys[pos + 1], tail * sizeof(uint64_t));
	memmove(&nd->u.vals[pos], &nd->u.vals[pos + 1], tail * sizeof(uint64_t));
	nd->n--;
	r->count--;
	return 0;
}

/* One transaction: inserts or updates `key`. `*found` tells whether it was present, and then
 * `*old` holds its previous value. */
int
pcol_bt_insert(PMEMobjpool *pop, PMEMoid root, uint64_t key, uint64_t val, uint64_t *old,
	       int *found)
{
	return tx_inserts(pop, root, bt_insert_in_tx, &key, &val, 1, old, found);
}

/* One transaction: removes `key`. `*found` tells whether it was present, and then `*old` holds
 * its value. */
int
pcol_bt_remove(PMEMobjpool *pop, PMEMoid root, uint64_t key, uint64_t *old, int *found)
{
	return tx_removes(pop, root, bt_remove_in_tx, &key, 1, old, found);
}

/* Looks `key` up without a transaction: 1 and `*val` set when present, else 0. */
int
pcol_bt_get(PMEMoid root, uint64_t key, uint64_t *val)
{
	const struct bt_root *r = pmemobj_direct(root);
	if (r == NULL)
		return 0;
	const struct bt_node *nd = bt_leaf(r, key);
	if (nd == NULL)
		return 0;
	uint64_t pos = bt_lower(nd, key);
	if (pos == nd->n || nd->keys[pos] != key)
		return 0;
	*val = nd->u.vals[pos];
	return 1;
}

/* One transaction inserting (or updating) `keys[i] -> vals[i]` for i < n. */
int
pcol_bt_insert_batch(PMEMobjpool *pop, PMEMoid root, const uint64_t *keys, const uint64_t *vals,
		     uint64_t n)
{
	uint64_t old;
	int found;
	return tx_inserts(pop, root, bt_insert_in_tx, keys, vals, n, &old, &found);
}

/* One transaction removing `keys[i]` for i < n (absent keys are skipped). */
int
pcol_bt_remove_batch(PMEMobjpool *pop, PMEMoid root, const uint64_t *keys, uint64_t n)
{
	uint64_t old;
	int found;
	return tx_removes(pop, root, bt_remove_in_tx, keys, n, &old, &found);
}

/* State of the recursive check. */
struct bt_walk {
	uint64_t *keys, *vals, cap;
	uint64_t n;          /* entries seen */
	int64_t leaf_depth; /* depth of the first leaf, -1 before it */
	int has_prev;
	uint64_t prev; /* last key seen, in order */
};

/* Checks the subtree at `oid` (depth `depth`), whose keys must lie in [lo, hi) (bounds only
 * where has_lo/has_hi). Returns 0 when consistent. */
static int
bt_check_node(PMEMoid oid, int depth, int has_lo, uint64_t lo, int has_hi, uint64_t hi,
	      struct bt_walk *w)
{
	const struct bt_node *nd = pmemobj_direct(oid);
	if (nd == NULL || depth > BT_MAX_DEPTH || nd->n > BT_MAX || nd->leaf > 1)
		return EINVAL;
	for (uint64_t i = 0; i < nd->n; i++) {
		uint64_t k = nd->keys[i];
		if ((i > 0 && nd->keys[i - 1] >= k) || (has_lo && k < lo) || (has_hi && k >= hi))
			return EINVAL;
	}
	if (nd->leaf) {
		if (w->leaf_depth < 0)
			w->leaf_depth = depth;
		else if (w->leaf_depth != depth)
			return EINVAL;
		for (uint64_t i = 0; i < nd->n; i++) {
			if (w->has_prev && w->prev >= nd->keys[i])
				return EINVAL;
			w->has_prev = 1;
			w->prev = nd->keys[i];
			if (w->n < w->cap) {
				w->keys[w->n] = nd->keys[i];
				w->vals[w->n] = nd->u.vals[i];
			}
			w->n++;
		}
		return 0;
	}
	/* Removal never empties an internal node: splits leave at least BT_MAX / 2 keys. */
	if (nd->n == 0)
		return EINVAL;
	for (uint64_t i = 0; i <= nd->n; i++) {
		int clo = i > 0 ? 1 : has_lo;
		uint64_t l = i > 0 ? nd->keys[i - 1] : lo;
		int chi = i < nd->n ? 1 : has_hi;
		uint64_t h = i < nd->n ? nd->keys[i] : hi;
		if (bt_check_node(nd->u.kids[i], depth + 1, clo, l, chi, h, w) != 0)
			return EINVAL;
	}
	return 0;
}

/*
 * Checks the structure: keys strictly increasing within nodes and in leaf order, every key
 * within its separators' bounds, all leaves at one depth, at most BT_MAX keys per node, no empty
 * internal node, and `count` entries in the leaves. Copies up to `cap` entries into `keys`/`vals`
 * in key order and sets `*n` to the number of entries seen. Returns 0 when consistent, EINVAL
 * otherwise.
 */
int
pcol_bt_check(PMEMoid root, uint64_t *keys, uint64_t *vals, uint64_t cap, uint64_t *n)
{
	const struct bt_root *r = pmemobj_direct(root);
	*n = 0;
	if (r == NULL)
		return EINVAL;
	if (OID_IS_NULL(r->top))
		return r->count == 0 ? 0 : EINVAL;
	struct bt_walk w = {keys, vals, cap, 0, -1, 0, 0};
	int rc = bt_check_node(r->top, 0, 0, 0, 0, 0, &w);
	*n = w.n;
	if (rc != 0)
		return rc;
	return w.n == r->count ? 0 : EINVAL;
}
