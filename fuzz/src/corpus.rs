//! Loading the committed inputs of a fuzz target (seed corpus and regressions), for the stable
//! replay tests (`pmem-core/tests/pmem-core/fuzz_corpus.rs`, `ptm/tests/ptm/fuzz_corpus.rs`,
//! `collections/tests/collections/fuzz_corpus.rs`), which include this file by path.

use std::path::{Path, PathBuf};

/// The committed inputs of `target` under `fuzz`: its seed corpus (must not be empty) and
/// regressions.
pub fn inputs(fuzz: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (kind, required) in [("corpus", true), ("regressions", false)] {
        let dir = fuzz.join(kind).join(target);
        match std::fs::read_dir(&dir) {
            Ok(entries) => files.extend(entries.map(|e| e.expect("list corpus").path())),
            Err(e) => assert!(!required, "{}: {e}", dir.display()),
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no inputs for {target}");
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read input");
            (p, data)
        })
        .collect()
}

/// A scratch directory private to this test process (tmpfs when available), removed with
/// everything in it when dropped: also when the test fails (a panic unwinds through it), so
/// failed runs leave nothing behind in `/dev/shm`. Derefs to its path.
#[allow(dead_code)] // Not every replay test uses it.
pub struct Scratch(PathBuf);

#[allow(dead_code)]
impl Scratch {
    /// Takes over `dir` (created by the caller) for removal on drop.
    pub fn adopt(dir: PathBuf) -> Self {
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A [`Scratch`] directory named after `name` and this process.
#[allow(dead_code)] // Not every replay test uses it.
pub fn scratch(name: &str) -> Scratch {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("ptm-fuzz-replay-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    Scratch(dir)
}
