//! Replays a committed corpus through a target body on the stable toolchain (the tests of
//! the main workspace include this file with `#[path]`).

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Runs `body` on every file in `fuzz/corpus/<target>/` (relative to the repository root
/// `root`) and returns how many there were. Panics naming every input that panicked (their
/// messages are printed as they happen), and when the corpus holds fewer than `min_files`
/// (a corpus that went missing must not pass as an empty one).
pub fn replay(root: &Path, target: &str, min_files: usize, body: fn(&[u8])) -> usize {
    let dir = root.join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= min_files,
        "{}: {} inputs, expected at least {min_files}",
        dir.display(),
        files.len()
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {target} panicked on {} of {} corpus inputs:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    files.len()
}
