//! The files Frontier's tests read, carried in the repository so that a fresh clone passes its
//! tests on its own: nothing a test reads lies outside the checkout.
//!
//! A dev-dependency only; product code never names these paths.

use std::path::PathBuf;

/// `tinyshakespeare.txt`: about 1.1 MB of Shakespeare's plays (public domain; see this crate's
/// `README.md` for its source).
pub fn tinyshakespeare() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tinyshakespeare.txt")
}

/// The bytes of [`tinyshakespeare`].
///
/// # Panics
/// When the file is missing from the checkout: a test cannot run without it.
pub fn tinyshakespeare_bytes() -> Vec<u8> {
    let path = tinyshakespeare();
    std::fs::read(&path).unwrap_or_else(|e| panic!("the test corpus {} is readable: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_corpus_is_in_the_checkout_whole() {
        let text = super::tinyshakespeare_bytes();
        assert_eq!(text.len(), 1_115_394, "tinyshakespeare is 1 115 394 bytes");
        assert!(text.starts_with(b"First Citizen:\nBefore we proceed any further, hear me speak."));
    }
}
