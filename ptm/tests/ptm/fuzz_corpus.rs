//! Guards log recovery and transaction sequences against the fuzz corpus on stable: every file
//! in `fuzz/corpus/{recover_log,tx_sequence}` and `fuzz/regressions/` goes through the fuzz
//! targets' own checks (`fuzz/src/txn.rs`): damaged logs and chunk tables recover or fail with
//! a damage error, never panic, and recover idempotently; transaction sequences keep the pool
//! equal to a model, heap checks included.

use std::path::{Path, PathBuf};

#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/src/txn.rs"]
mod txn;

/// The corpus reader of the fuzz crate (also used by `checked.rs`).
#[allow(unreachable_pub)]
#[path = "../../../fuzz/src/corpus.rs"]
pub(crate) mod corpus;

/// The committed inputs of `target` (seed corpus and regressions).
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    corpus::inputs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"), target)
}

#[test]
fn recover_log_corpus() {
    let dir = corpus::scratch("recover_log");
    let (template, lanes, table) = txn::make_recover_template(&dir);
    // The empty input is the unmutated image: it recovers to the committed state.
    txn::check_recover_log(&dir, &template, &lanes, &table, &[]);
    for (path, data) in inputs("recover_log") {
        eprintln!("recover_log {}", path.display());
        txn::check_recover_log(&dir, &template, &lanes, &table, &data);
    }
    std::fs::remove_dir(&*dir).expect("the checks left files in the scratch directory");
}

#[test]
fn tx_sequence_corpus() {
    let dir = corpus::scratch("tx_sequence");
    let template = txn::make_sequence_template(&dir);
    for (path, data) in inputs("tx_sequence") {
        eprintln!("tx_sequence {}", path.display());
        txn::check_tx_sequence(&dir, &template, &data);
    }
    std::fs::remove_dir(&*dir).expect("the checks left files in the scratch directory");
}

#[test]
fn tx_sequence_decoding() {
    use txn::{Action, Step};
    // set, begin nested, alloc, end nested (Err), commit, reopen, free.
    let steps = txn::decode_program(&[0, 1, 5, 3, 1, 0x12, 4, 1, 5, 7, 2, 2]);
    assert_eq!(
        steps,
        vec![
            Step::Tx(
                vec![
                    Action::Set(1, 5),
                    Action::Nested(vec![Action::Alloc(2, 64)], false)
                ],
                true
            ),
            Step::Reopen,
            Step::Tx(vec![Action::Free(2)], true),
        ]
    );
}
