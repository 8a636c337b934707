//! The allocator state of one running transaction ([`TxHeap`]): the bitmap words and chunk
//! descriptors it changes (stored at commit), the chunks it reserved, freed or emptied, and its
//! pending slab blocks. Kept in the lane's [`LaneVolatile`](crate::engine::lane_state::LaneVolatile)
//! so its buffers are reused. The operations on it are `Transaction::alloc` / `free`
//! (`alloc.rs`).

use std::collections::BTreeMap;

use crate::engine::heap::CLASSES;

/// Bitmap word offset -> (bits to set, bits to clear) at commit: a vector searched linearly
/// while small (most transactions touch a word or two, and a cleared vector keeps its memory,
/// where a map allocates a node in every transaction), a map beyond [`WordMasks::SMALL`].
#[derive(Debug, Default)]
pub(crate) struct WordMasks {
    small: Vec<(u64, (u64, u64))>,
    large: BTreeMap<u64, (u64, u64)>,
}

impl WordMasks {
    /// Most entries kept in the vector.
    const SMALL: usize = 32;

    pub(crate) fn get(&self, word: &u64) -> Option<&(u64, u64)> {
        if self.large.is_empty() {
            self.small.iter().find(|e| e.0 == *word).map(|e| &e.1)
        } else {
            self.large.get(word)
        }
    }

    pub(crate) fn insert(&mut self, word: u64, masks: (u64, u64)) {
        if !self.large.is_empty() {
            self.large.insert(word, masks);
        } else if let Some(e) = self.small.iter_mut().find(|e| e.0 == word) {
            e.1 = masks;
        } else if self.small.len() < Self::SMALL {
            self.small.push((word, masks));
        } else {
            self.large.extend(self.small.drain(..));
            self.large.insert(word, masks);
        }
    }

    pub(crate) fn remove(&mut self, word: &u64) {
        if self.large.is_empty() {
            if let Some(i) = self.small.iter().position(|e| e.0 == *word) {
                self.small.swap_remove(i);
            }
        } else {
            self.large.remove(word);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.small.is_empty() && self.large.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.small.clear();
        if !self.large.is_empty() {
            self.large.clear();
        }
    }

    /// Every entry (in no particular order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &(u64, u64))> {
        self.small.iter().map(|(w, m)| (w, m)).chain(self.large.iter())
    }
}

/// Chunk and descriptor lists of one transaction ([`TxHeap::lists`]).
#[derive(Debug, Default)]
pub(crate) struct ChunkLists {
    /// Descriptor offset -> value to store at commit (in order).
    pub(crate) descs: Vec<(u64, u64)>,
    /// Chunk runs taken from the index by this transaction (new slabs and large blocks).
    pub(crate) reserved: Vec<(u64, u64)>,
    /// New slab chunks (chunk, class): offered to others after commit.
    pub(crate) new_slabs: Vec<(u64, usize)>,
    /// Runs freed by this transaction: free again after commit.
    pub(crate) freed_runs: Vec<(u64, u64)>,
    /// Runs allocated and freed by this transaction: quarantined after commit, free after abort.
    pub(crate) freed_new: Vec<(u64, u64)>,
    /// Slab blocks allocated and freed by this transaction (bitmap word, bit): quarantined after
    /// commit.
    pub(crate) freed_new_blocks: Vec<(u64, u64)>,
    /// Slab chunks with blocks freed (chunk, class): offered again after commit.
    pub(crate) freed_slabs: Vec<(u64, usize)>,
    /// Slab chunks (chunk, class) whose last block this transaction freed: their descriptor is
    /// logged (at that free, so before the drain that covers the free), to be set free at commit
    /// if the slab is still empty then.
    pub(crate) emptied_slabs: Vec<(u64, usize)>,
    /// Chunk runs (start, chunks) this transaction reserved and then gave up (a slab made and
    /// cancelled): free again when the transaction ends, committed or not.
    pub(crate) cancelled_chunks: Vec<(u64, u64)>,
    /// Slab chunks (chunk, class) this transaction turns into free chunks at commit;
    /// quarantined after commit, since their bitmap words are in the commit's data hash.
    pub(crate) returned_slabs: Vec<(u64, usize)>,
}

impl ChunkLists {
    fn clear(&mut self) {
        self.descs.clear();
        self.reserved.clear();
        self.new_slabs.clear();
        self.freed_runs.clear();
        self.freed_new.clear();
        self.freed_new_blocks.clear();
        self.freed_slabs.clear();
        self.emptied_slabs.clear();
        self.cancelled_chunks.clear();
        self.returned_slabs.clear();
    }
}

/// What an unused [`Lists`] reads as.
static NO_LISTS: ChunkLists = ChunkLists {
    descs: Vec::new(),
    reserved: Vec::new(),
    new_slabs: Vec::new(),
    freed_runs: Vec::new(),
    freed_new: Vec::new(),
    freed_new_blocks: Vec::new(),
    freed_slabs: Vec::new(),
    emptied_slabs: Vec::new(),
    cancelled_chunks: Vec::new(),
    returned_slabs: Vec::new(),
};

/// [`ChunkLists`], allocated by the lane's first transaction that changes one (then kept with
/// the lane state, cleared at each begin); reads as empty until then.
#[derive(Debug, Default)]
pub(crate) struct Lists {
    lists: Option<Box<ChunkLists>>,
    /// Whether the lists may be non-empty: set by every mutable access, cleared at begin.
    changed: bool,
}

impl Lists {
    /// Whether this transaction may have put something in the lists (a mutable access since
    /// the last [`TxHeap::begin`]); `false` means every list is empty.
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }
}

impl std::ops::Deref for Lists {
    type Target = ChunkLists;

    fn deref(&self) -> &ChunkLists {
        self.lists.as_deref().unwrap_or(&NO_LISTS)
    }
}

impl std::ops::DerefMut for Lists {
    fn deref_mut(&mut self) -> &mut ChunkLists {
        self.changed = true;
        self.lists.get_or_insert_with(Box::default)
    }
}

/// Allocator state of one transaction, kept in its lane (buffers reused).
#[derive(Debug, Default)]
pub(crate) struct TxHeap {
    /// Bitmap word offset -> (bits to set, bits to clear) at commit.
    pub(crate) bits: WordMasks,
    /// The lists of chunks and descriptors the transaction changes (rarely used: boxed, so
    /// the lane state a transaction moves in and out stays small).
    pub(crate) lists: Lists,
    /// Chunks whose metadata lock this transaction holds.
    pub(crate) locked: Vec<u64>,
    /// Whether this transaction allocated anything (it is then no longer removal-only, and its
    /// log extents no longer come from the metadata reserve).
    pub(crate) allocated: bool,
    /// Whether this transaction may use the application's reserve
    /// ([`Transaction::use_reserve`]).
    pub(crate) use_reserve: bool,
    /// Per class: the slab chunk this lane allocated from last (kept across transactions).
    pub(crate) hint: Vec<Option<u64>>,
    /// Slab blocks allocated since the last drain whose log records are not written yet
    /// (bitmap word, block offset, requested bytes): written by
    /// [`Transaction::log_pending_allocations`] before the next drain or at commit. A block
    /// freed again before then is simply forgotten (a cancelled reservation).
    pub(crate) pending: Vec<(u64, u64, u64)>,
}

impl TxHeap {
    pub(crate) fn begin(&mut self) {
        self.bits.clear();
        self.locked.clear();
        self.pending.clear();
        if self.lists.changed {
            if let Some(l) = self.lists.lists.as_deref_mut() {
                l.clear();
            }
            self.lists.changed = false;
        }
        self.allocated = false;
        self.use_reserve = false;
        if self.hint.len() != CLASSES.len() {
            self.hint = vec![None; CLASSES.len()];
        }
    }

    /// Whether commit has metadata to store.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.bits.is_empty() || !self.lists.descs.is_empty()
    }
}
