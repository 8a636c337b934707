//! The key and value plumbing of `owned.rs` that the model tests reach only in part: every
//! `AsKey` form (`&str`, `String`, `&String`; `&[T]`, `Vec<T>`, `&Vec<T>`) inserts the key it
//! holds; `PString` and `PVec` keys iterate as themselves; `PToOwned` copies `Copy`, string and
//! vector values out; `PVec<u8>` and `PString` B-tree keys range, iterate and copy out as `[u8]`
//! and `str` do; every key form of the same bytes hashes alike, fixed and seeded, borrowed
//! and stored, and the fixed hash is the on-media one (written out here from its definition);
//! and a key type that implements `PKey` with the default seeded methods hashes as documented
//! (its fixed hash for seed 0, else SipHash keyed by the seed over the fixed hash's 8 bytes,
//! which is what a `u64` key with that value hashes to).

use crate::common::{opts, shm_dir};

use std::collections::BTreeMap;

use ptm::{Error, Persistent, Pool, Result, Transaction};
use ptm_collections::{AsKey, PBTreeMap, PHashMap, PKey, PString, PValue, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    names: PHashMap<PString, u64>,
    lists: PHashMap<PVec<u64>, u64>,
    owned: PHashMap<PString, PVec<u64>>,
    copies: PHashMap<u64, u64>,
    bytes: PBTreeMap<PVec<u8>, u64>,
    words: PBTreeMap<PString, u64>,
}

fn create(name: &str) -> (tempfile::TempDir, Pool<Root>) {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join(name), 8 << 20, &opts()).unwrap();
    (dir, pool)
}

#[test]
fn every_as_key_form_inserts_the_key_it_holds() {
    let (_dir, pool) = create("k.pool");
    let (a, b, c) = (String::from("ada"), String::from("bob"), "cy");
    let (x, y, z) = (vec![1u64, 2, 3], vec![4u64, 5], [6u64, 7, 8, 9]);
    pool.transaction(|tx, r| {
        r.names.insert(tx, &a, 1)?;
        r.names.insert(tx, b.clone(), 2)?;
        r.names.insert(tx, c, 3)?;
        r.lists.insert(tx, &x, 1)?;
        r.lists.insert(tx, y.clone(), 2)?;
        r.lists.insert(tx, &z[..], 3)?;
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.names.len(tx), 3);
        for (k, v) in [("ada", 1), ("bob", 2), ("cy", 3)] {
            assert_eq!(r.names.get(tx, k)?, Some(v), "{k}");
        }
        for k in ["", "xyzzy"] {
            assert_eq!(r.names.get(tx, k)?, None, "{k:?}");
        }
        let mut names = r
            .names
            .keys(tx)?
            .into_iter()
            .map(|k| k.as_string(tx))
            .collect::<Result<Vec<_>>>()?;
        names.sort();
        assert_eq!(names, ["ada", "bob", "cy"], "string keys iterate as themselves");

        assert_eq!(r.lists.len(tx), 3);
        for (k, v) in [(&x[..], 1), (&y[..], 2), (&z[..], 3)] {
            assert_eq!(r.lists.get(tx, k)?, Some(v), "{k:?}");
        }
        for k in [&[][..], &[0][..]] {
            assert_eq!(r.lists.get(tx, k)?, None, "{k:?}");
        }
        let mut lists = r
            .lists
            .keys(tx)?
            .into_iter()
            .map(|k| k.to_vec(tx))
            .collect::<Result<Vec<_>>>()?;
        lists.sort();
        assert_eq!(
            lists,
            [x.clone(), y.clone(), z.to_vec()],
            "vector keys iterate as themselves"
        );
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn owned_copies_of_copy_string_and_vector_entries() {
    let (_dir, pool) = create("o.pool");
    pool.transaction(|tx, r| {
        for (i, k) in ["ada", "bob", "cy"].into_iter().enumerate() {
            r.owned
                .get_or_insert_new(tx, k)?
                .extend(tx, (0..=i as u64).map(|j| j * 10 + 1))?;
            r.copies.insert(tx, i as u64 + 5, i as u64 * 100 + 7)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let (mut owned, mut copies) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.owned.to_vec_owned(tx)?, r.copies.to_vec_owned(tx)?)))
        .unwrap();
    owned.sort();
    copies.sort();
    assert_eq!(
        owned,
        [
            ("ada".to_owned(), vec![1]),
            ("bob".to_owned(), vec![1, 11]),
            ("cy".to_owned(), vec![1, 11, 21]),
        ]
    );
    assert_eq!(copies, [(5, 7), (6, 107), (7, 207)]);
}

#[test]
fn byte_and_string_btree_keys_range_iterate_and_copy_out_as_std_does() {
    let (_dir, pool) = create("b.pool");
    let keys: Vec<Vec<u8>> = ["", "a", "ab", "b", "ba", "c", "cab", "d", "zz"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let model: BTreeMap<Vec<u8>, u64> = keys.iter().cloned().zip(1..).collect();
    pool.transaction(|tx, r| {
        for (k, &v) in &model {
            r.bytes.insert(tx, k.as_slice(), v)?;
            r.words.insert(tx, std::str::from_utf8(k).unwrap(), v)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        let want: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, &v)| (k.clone(), v)).collect();
        assert_eq!(r.bytes.to_vec(tx)?, want, "PVec<u8> keys copied out");
        let words: Vec<(Vec<u8>, u64)> = r
            .words
            .to_vec(tx)?
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v))
            .collect();
        assert_eq!(words, want, "PString keys copied out");
        for (lo, hi) in [("a", "c"), ("ab", "cab"), ("b", "zz"), ("", "b"), ("c", "c")] {
            let (lo_b, hi_b) = (lo.as_bytes(), hi.as_bytes());
            let want: Vec<(Vec<u8>, u64)> = model
                .range::<[u8], _>((std::ops::Bound::Included(lo_b), std::ops::Bound::Excluded(hi_b)))
                .map(|(k, &v)| (k.clone(), v))
                .collect();
            let got = r
                .bytes
                .range(tx, lo_b..hi_b)?
                .map(|(k, v)| Ok((k.to_vec(tx)?, v)))
                .collect::<Result<Vec<_>>>()?;
            assert_eq!(got, want, "bytes {lo:?}..{hi:?}");
            let got = r
                .words
                .range(tx, lo..hi)?
                .map(|(k, v)| Ok((k.as_string(tx)?.into_bytes(), v)))
                .collect::<Result<Vec<_>>>()?;
            assert_eq!(got, want, "words {lo:?}..{hi:?}");
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// A key that implements `PKey` with the default seeded methods; its fixed hash is its value.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Ident {
    v: u64,
}

impl PValue for Ident {
    const OWNS: bool = false;

    unsafe fn free_owned(&self, _tx: &Transaction<'_>) -> Result<()> {
        Ok(())
    }
}

// SAFETY: a plain `u64` owning nothing, moved by its bytes; `Ref` is a copy taken at once;
// `key_hash`, `key_eq` and `key_new` only read; a stored key hashes as its borrowed form.
unsafe impl PKey for Ident {
    type Borrowed = u64;
    type Ref<'a> = u64;

    fn borrowed_hash(b: &u64) -> u64 {
        *b
    }

    fn key_hash(&self, _tx: &Transaction<'_>) -> Result<u64> {
        Ok(self.v)
    }

    fn key_eq(&self, _tx: &Transaction<'_>, b: &u64) -> Result<bool> {
        Ok(self.v == *b)
    }

    unsafe fn key_new(_tx: &Transaction<'_>, b: &u64) -> Result<Ident> {
        Ok(Ident { v: *b })
    }

    fn key_ref(&self) -> u64 {
        self.v
    }
}

impl AsKey<Ident> for u64 {
    fn as_key(&self) -> &u64 {
        self
    }
}

#[test]
fn default_seeded_hashes_are_the_fixed_hash_or_siphash_over_it() {
    let (_dir, pool) = create("h.pool");
    pool.transaction(|tx, _| {
        for v in [0u64, 1, 7, 0x1234_5678_9abc_def0, u64::MAX] {
            let stored = Ident { v };
            assert_eq!(Ident::seeded_borrowed_hash(&v, 0), v, "seed 0: the fixed hash");
            assert_eq!(stored.seeded_key_hash(tx, 0)?, v, "seed 0, stored key");
            for seed in [1u64, 0xdead_beef, (1 << 56) - 1] {
                // The SipHash of the fixed hash's 8 little-endian bytes: a `u64` key's own
                // seeded hash of the same value.
                let want = <u64 as PKey>::seeded_borrowed_hash(&v, seed);
                assert_ne!(want, v);
                assert_eq!(
                    Ident::seeded_borrowed_hash(&v, seed),
                    want,
                    "{v:#x}, seed {seed:#x}"
                );
                assert_eq!(
                    stored.seeded_key_hash(tx, seed)?,
                    want,
                    "stored {v:#x}, seed {seed:#x}"
                );
            }
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// The fixed (seed 0) byte hash, written out from its definition (design §13.3/§13.4): the
/// state starts at a constant xor the length, mixes each 8-byte little-endian word (the last
/// zero-padded) by xor, multiply and xorshift, and ends with MurmurHash3's fmix64.
fn fixed_hash(bytes: &[u8]) -> u64 {
    let mut s = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    for c in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        let h = (s ^ u64::from_le_bytes(w)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        s = h ^ (h >> 32);
    }
    s ^= s >> 33;
    s = s.wrapping_mul(0xff51_afd7_ed55_8ccd);
    s ^= s >> 33;
    s = s.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    s ^ (s >> 33)
}

/// Every key form of the same bytes hashes alike (a `Copy` array or `u64`, a `PString`, a
/// `PVec<u8>`, a `PVec<u64>`; borrowed and stored; fixed and seeded), and the fixed hash is the
/// on-media one: the keys of maps written before seeds stay found.
#[test]
fn key_hashes_agree_across_forms_and_the_fixed_hash_is_the_on_media_one() {
    const SEEDS: [u64; 2] = [1, 0x00de_adbe_ef12_3456];
    let (_dir, pool) = create("f.pool");
    let strings = ["", "abc", "exactly8", "longer than one word"];
    let lists: [&[u64]; 3] = [&[], &[7], &[1, 2, 3]];
    pool.transaction(|tx, r| {
        for (i, s) in strings.iter().enumerate() {
            r.words.insert(tx, *s, i as u64)?;
            r.bytes.insert(tx, s.as_bytes(), i as u64)?;
        }
        for (i, l) in lists.iter().enumerate() {
            r.lists.insert(tx, *l, i as u64)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        let words = r.words.keys(tx)?;
        let bytes = r.bytes.keys(tx)?;
        for s in strings {
            let b = s.as_bytes();
            let fixed = fixed_hash(b);
            let word = *words.iter().find(|k| k.as_string(tx).unwrap() == s).unwrap();
            let vec = *bytes.iter().find(|k| k.to_vec(tx).unwrap() == b).unwrap();
            assert_eq!(<PString as PKey>::borrowed_hash(s), fixed, "{s:?}");
            assert_eq!(<PVec<u8> as PKey>::borrowed_hash(b), fixed, "{s:?}");
            assert_eq!(word.key_hash(tx)?, fixed, "stored {s:?}");
            assert_eq!(vec.key_hash(tx)?, fixed, "stored {s:?} bytes");
            for seed in SEEDS {
                let seeded = <PVec<u8> as PKey>::seeded_borrowed_hash(b, seed);
                assert_ne!(seeded, fixed, "{s:?}, seed {seed:#x}");
                assert_eq!(<PString as PKey>::seeded_borrowed_hash(s, seed), seeded, "{s:?}");
                assert_eq!(word.seeded_key_hash(tx, seed)?, seeded, "stored {s:?}");
                assert_eq!(vec.seeded_key_hash(tx, seed)?, seeded, "stored {s:?} bytes");
            }
        }
        // `Copy` keys hash their bytes: a 3-byte array as the string "abc", a `u64` as its 8
        // little-endian bytes.
        let abc = *b"abc";
        assert_eq!(<[u8; 3] as PKey>::borrowed_hash(&abc), fixed_hash(b"abc"));
        assert_eq!(abc.key_hash(tx)?, fixed_hash(b"abc"));
        for seed in SEEDS {
            let want = <PString as PKey>::seeded_borrowed_hash("abc", seed);
            assert_eq!(<[u8; 3] as PKey>::seeded_borrowed_hash(&abc, seed), want);
            assert_eq!(abc.seeded_key_hash(tx, seed)?, want);
        }
        for v in [0u64, 1, 0x0123_4567_89ab_cdef] {
            let le = v.to_le_bytes();
            assert_eq!(<u64 as PKey>::borrowed_hash(&v), fixed_hash(&le), "{v:#x}");
            assert_eq!(v.key_hash(tx)?, fixed_hash(&le), "{v:#x}");
            for seed in SEEDS {
                let want = <PVec<u8> as PKey>::seeded_borrowed_hash(&le, seed);
                assert_eq!(<u64 as PKey>::seeded_borrowed_hash(&v, seed), want, "{v:#x}");
                assert_eq!(v.seeded_key_hash(tx, seed)?, want, "{v:#x}");
            }
        }
        // `PVec<u64>` keys hash their elements' bytes.
        let stored = r.lists.keys(tx)?;
        for l in lists {
            let le: Vec<u8> = l.iter().flat_map(|w| w.to_le_bytes()).collect();
            let key = *stored.iter().find(|k| k.to_vec(tx).unwrap() == l).unwrap();
            assert_eq!(<PVec<u64> as PKey>::borrowed_hash(l), fixed_hash(&le), "{l:?}");
            assert_eq!(key.key_hash(tx)?, fixed_hash(&le), "stored {l:?}");
            for seed in SEEDS {
                let want = <PVec<u8> as PKey>::seeded_borrowed_hash(&le, seed);
                assert_eq!(<PVec<u64> as PKey>::seeded_borrowed_hash(l, seed), want, "{l:?}");
                assert_eq!(key.seeded_key_hash(tx, seed)?, want, "stored {l:?}");
            }
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// An empty string or vector key is stored with no buffer (`PVec::new_exact` allocates none
/// for no items): inserting it allocates only the map's segment, and the key reports no
/// buffer.
#[test]
fn an_empty_key_owns_no_buffer() {
    let (_dir, mut pool) = create("empty.pool");
    pool.transaction(|tx, r| {
        r.names.insert(tx, "", 1)?;
        r.lists.insert(tx, Vec::<u64>::new(), 2)?;
        for k in r.names.keys(tx)? {
            assert_eq!(k.buffer_offset(tx), None, "the empty string key");
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let (names, lists) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.names.block_offsets(tx)?, r.lists.block_offsets(tx)?)))
        .unwrap();
    assert_eq!((names.len(), lists.len()), (1, 1), "one segment each");
    let owned: std::collections::BTreeSet<u64> = names.into_iter().chain(lists).collect();
    crate::common::assert_allocated_exactly(&mut pool, &owned, "the segments only");
}
