//! `PString`'s small methods against `String`: `push` of characters of 1 to 4 UTF-8 bytes,
//! `is_empty` before and after, `with_str` over strings shorter and longer than its 256-byte
//! stack buffer (and exactly that long), and `Debug` (which never prints the contents: it needs
//! a transaction to read them).

use crate::common::*;
use ptm::Error;

#[test]
fn push_appends_characters_of_every_utf8_width_as_string_does() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "s.pool");
    let mut model = String::new();
    let empty = pool
        .transaction(|tx, r| Ok::<_, Error>(r.s.is_empty(tx)))
        .unwrap();
    assert!(empty, "a new string is empty");
    for (i, c) in ['a', 'é', '€', '𝄞', 'z'].into_iter().cycle().take(23).enumerate() {
        pool.transaction(|tx, r| r.s.push(tx, c)).unwrap();
        model.push(c);
        let (got, empty) = pool
            .transaction(|tx, r| Ok::<_, Error>((r.s.as_string(tx)?, r.s.is_empty(tx))))
            .unwrap();
        assert_eq!(got, model, "after push {i}");
        assert!(!empty, "after push {i}");
    }
    pool.transaction(|tx, r| r.s.clear(tx)).unwrap();
    let empty = pool
        .transaction(|tx, r| Ok::<_, Error>(r.s.is_empty(tx)))
        .unwrap();
    assert!(empty, "a cleared string is empty");
}

#[test]
fn with_str_reads_strings_shorter_than_its_stack_buffer_as_long_and_longer() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "s.pool");
    for len in [0usize, 1, 255, 256, 257, 300, 4096] {
        let want: String = "ab€".chars().cycle().take(len).collect::<String>();
        pool.transaction(|tx, r| r.s.set(tx, &want)).unwrap();
        let got = pool
            .transaction(|tx, r| r.s.with_str(tx, |s| s.to_owned()))
            .unwrap();
        assert_eq!(got, want, "{} bytes", want.len());
    }
}

#[test]
fn debug_names_the_type_without_its_contents() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "s.pool");
    pool.transaction(|tx, r| r.s.set(tx, "secret")).unwrap();
    let printed = pool
        .transaction(|_, r| Ok::<_, Error>(format!("{:?}", r.s)))
        .unwrap();
    assert_eq!(printed, "PString { .. }");
}
