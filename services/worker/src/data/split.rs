//! The train/validation split, made on text before any tokenizer sees it.
//!
//! Splitting text rather than tokens means the validation text is the same whatever the
//! tokenizer, and a BPE tokenizer can be trained on the training text alone, so nothing of the
//! validation part is ever trained on, not even the vocabulary.
//!
//! Two methods, chosen from the corpus shape:
//! - **By document**, when the corpus has enough documents that the validation part is expected
//!   to hold at least [`MIN_VALIDATION_DOCUMENTS`] of them (`documents x fraction >= 4`). A
//!   document is held out when the first 8 bytes of the SHA-256 of its text, read as a
//!   big-endian `u64`, fall below `fraction x 2^64`. The choice depends on the document alone:
//!   it is the same on every machine, does not move when other documents are added or
//!   reordered, and puts exact duplicates on the same side. The fraction is then a fraction of
//!   documents, met in expectation, not of tokens.
//! - **By tail**, otherwise (or when the hash draw happens to leave one side empty): the last
//!   `ceil(fraction x bytes)` bytes of the documents in order are held out, the cut moved
//!   forward to the next line start so no line is split (or, when no line starts after it, to
//!   the next character boundary).
//!
//! A fraction of zero holds nothing out. Either way each side is a list of text segments, which
//! the pipeline tokenizes separately and joins with the document separator.

use sha2::{Digest, Sha256};

/// The fewest validation documents expected before the split is made by document.
pub const MIN_VALIDATION_DOCUMENTS: usize = 4;

/// Names the split algorithm in cache keys; bump it when the split changes.
pub const SPLIT_VERSION: u64 = 1;

/// Why a corpus could not be split.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// The validation fraction is not in `[0, 1)`.
    #[error("validation fraction {0} is outside [0, 1)")]
    InvalidFraction(f64),
    /// The corpus is too small to leave text on both sides.
    #[error("a corpus of {bytes} bytes is too small to hold out a validation part")]
    TooSmall { bytes: usize },
}

/// How a split was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitMethod {
    /// Nothing was held out (fraction zero).
    NoValidation,
    /// Whole documents were held out, chosen by the hash of their text.
    Documents { validation_documents: usize },
    /// The tail of the text was held out, cut at `byte` of document `document`.
    Tail { document: usize, byte: usize },
}

/// The two sides of a split, as text segments in corpus order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextSplit<'a> {
    /// Text the model (and a BPE tokenizer) may train on.
    pub train: Vec<&'a str>,
    /// Held-out text, used only to evaluate.
    pub validation: Vec<&'a str>,
    /// How the split was made.
    pub method: SplitMethod,
}

/// Splits `documents` (all non-empty, as [`super::Corpus`] gives them), holding out about
/// `validation_fraction` of them for validation. See the module doc for the method.
pub fn split_documents(documents: &[String], validation_fraction: f64) -> Result<TextSplit<'_>, SplitError> {
    if !(0.0..1.0).contains(&validation_fraction) {
        return Err(SplitError::InvalidFraction(validation_fraction));
    }
    if validation_fraction == 0.0 {
        return Ok(TextSplit {
            train: documents.iter().map(String::as_str).collect(),
            validation: Vec::new(),
            method: SplitMethod::NoValidation,
        });
    }
    if documents.len() as f64 * validation_fraction >= MIN_VALIDATION_DOCUMENTS as f64
        && let Some(split) = split_by_document(documents, validation_fraction)
    {
        return Ok(split);
    }
    split_by_tail(documents, validation_fraction)
}

/// Whether a document goes to validation: its hash, as a fraction of 2^64, is below `fraction`.
fn held_out(document: &str, validation_fraction: f64) -> bool {
    let digest = Sha256::digest(document.as_bytes());
    let draw = u64::from_be_bytes(digest[..8].try_into().expect("an 8-byte slice"));
    // fraction < 1, so the product is below 2^64; the cast truncates the same way everywhere.
    let threshold = (validation_fraction * 18_446_744_073_709_551_616.0) as u64;
    draw < threshold
}

fn split_by_document(documents: &[String], validation_fraction: f64) -> Option<TextSplit<'_>> {
    let (validation, train): (Vec<&str>, Vec<&str>) =
        documents.iter().map(String::as_str).partition(|doc| held_out(doc, validation_fraction));
    if train.is_empty() || validation.is_empty() {
        return None;
    }
    let method = SplitMethod::Documents { validation_documents: validation.len() };
    Some(TextSplit { train, validation, method })
}

fn split_by_tail(documents: &[String], validation_fraction: f64) -> Result<TextSplit<'_>, SplitError> {
    let total: usize = documents.iter().map(String::len).sum();
    let held = ((total as f64 * validation_fraction).ceil() as usize).clamp(1, total.max(1));
    let target = total - held;

    // Find the document holding the target position and the offset inside it.
    let mut start = 0;
    let mut document = 0;
    while document < documents.len() && start + documents[document].len() <= target {
        start += documents[document].len();
        document += 1;
    }
    // With held >= 1 the target is before the end, so it lies inside a document.
    let text = &documents[document];
    let offset = target - start;

    // Forward to the next line start in this document, or this document's end (which is the
    // start of the next document's first line).
    let line_start = text[..].as_bytes()[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |newline| offset + newline + 1);
    let (document, byte) = if line_start < text.len() {
        (document, line_start)
    } else if document + 1 < documents.len() {
        (document + 1, 0)
    } else {
        // No line starts after the target: cut at a character boundary instead, forward if
        // that leaves some validation text, else backward.
        let forward = (offset..text.len()).find(|&i| text.is_char_boundary(i));
        let byte =
            forward.unwrap_or_else(|| (0..=offset).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0));
        (document, byte)
    };
    if document == 0 && byte == 0 {
        return Err(SplitError::TooSmall { bytes: total });
    }

    let mut train: Vec<&str> = documents[..document].iter().map(String::as_str).collect();
    let mut validation = Vec::new();
    let (head, tail) = documents[document].split_at(byte);
    if !head.is_empty() {
        train.push(head);
    }
    validation.push(tail);
    validation.extend(documents[document + 1..].iter().map(String::as_str));
    Ok(TextSplit { train, validation, method: SplitMethod::Tail { document, byte } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    /// Documents numbered so each is unique; their hashes decide the split.
    fn numbered(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("document number {i}\n")).collect()
    }

    #[test]
    fn zero_fraction_holds_nothing_out() {
        let documents = docs(&["one", "two"]);
        let split = split_documents(&documents, 0.0).unwrap();
        assert_eq!(split.train, ["one", "two"]);
        assert!(split.validation.is_empty());
        assert_eq!(split.method, SplitMethod::NoValidation);
    }

    #[test]
    fn fraction_outside_zero_to_one_is_rejected() {
        let documents = docs(&["one"]);
        for fraction in [-0.1, 1.0, 1.5, f64::NAN] {
            assert!(
                matches!(split_documents(&documents, fraction), Err(SplitError::InvalidFraction(_))),
                "{fraction}"
            );
        }
    }

    #[test]
    fn many_documents_are_split_by_document_deterministically_and_disjointly() {
        let documents = numbered(400);
        let split = split_documents(&documents, 0.1).unwrap();
        let SplitMethod::Documents { validation_documents } = split.method else {
            panic!("expected a document split, got {:?}", split.method);
        };
        // Every document is on exactly one side, in corpus order.
        assert_eq!(split.train.len() + split.validation.len(), 400);
        assert_eq!(split.validation.len(), validation_documents);
        let mut merged: Vec<&str> = split.train.iter().chain(&split.validation).copied().collect();
        merged.sort();
        let mut all: Vec<&str> = documents.iter().map(String::as_str).collect();
        all.sort();
        assert_eq!(merged, all);
        // About a tenth is held out (binomial: mean 40, sd 6).
        assert!((20..=60).contains(&validation_documents), "{validation_documents}");
        // The same input gives the same split.
        assert_eq!(split_documents(&documents, 0.1).unwrap(), split);
        // Pinned draws, so a change to the hash rule cannot pass unnoticed: these are the first
        // held-out documents of this corpus.
        assert_eq!(
            split.validation[..3],
            ["document number 8\n", "document number 22\n", "document number 23\n"]
        );
    }

    #[test]
    fn document_side_does_not_move_when_other_documents_are_added_or_reordered() {
        let documents = numbered(100);
        let mut more = numbered(300);
        more.reverse();
        let held = |docs: &[String]| -> Vec<String> {
            let mut v: Vec<String> =
                split_documents(docs, 0.2).unwrap().validation.iter().map(|s| (*s).to_owned()).collect();
            v.sort();
            v
        };
        let small = held(&documents);
        let large = held(&more);
        for doc in &documents {
            assert_eq!(small.contains(doc), large.contains(doc), "{doc:?} changed sides");
        }
    }

    #[test]
    fn few_documents_are_split_at_a_line_start_in_the_tail() {
        // 3 documents x 0.25 < 4 expected validation documents: a tail split.
        let documents = docs(&["first doc\n", "line one\nline two\nline three\n", "last\n"]);
        let total: usize = documents.iter().map(String::len).sum(); // 10 + 29 + 5 = 44
        assert_eq!(total, 44);
        let split = split_documents(&documents, 0.25).unwrap();
        // ceil(44 x 0.25) = 11 held bytes put the target at byte 33, i.e. byte 23 of document 1
        // ("line th|ree"); the cut moves on to the end of that line, which is the document's end,
        // so the validation part starts with the next document.
        assert_eq!(split.method, SplitMethod::Tail { document: 2, byte: 0 });
        assert_eq!(split.train, ["first doc\n", "line one\nline two\nline three\n"]);
        assert_eq!(split.validation, ["last\n"]);

        let split = split_documents(&documents, 0.5).unwrap();
        // Target 22 = byte 12 of document 1 ("lin|e two"); the next line starts at byte 18.
        assert_eq!(split.method, SplitMethod::Tail { document: 1, byte: 18 });
        assert_eq!(split.train, ["first doc\n", "line one\nline two\n"]);
        assert_eq!(split.validation, ["line three\n", "last\n"]);
        assert_eq!(split_documents(&documents, 0.5).unwrap(), split);
    }

    #[test]
    fn tail_of_a_single_line_is_cut_at_a_character_boundary() {
        let documents = docs(&["aaaaaaaaé"]); // 8 + 2 bytes, no newline
        let split = split_documents(&documents, 0.1).unwrap();
        // Target byte 9 is inside 'é'; no line start follows, so back to its start.
        assert_eq!(split.method, SplitMethod::Tail { document: 0, byte: 8 });
        assert_eq!(split.train, ["aaaaaaaa"]);
        assert_eq!(split.validation, ["é"]);
    }

    #[test]
    fn corpus_of_one_character_cannot_be_split() {
        let documents = docs(&["é"]);
        assert_eq!(split_documents(&documents, 0.5), Err(SplitError::TooSmall { bytes: 2 }));
    }
}
