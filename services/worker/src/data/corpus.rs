//! Reading a training corpus from disk into documents.
//!
//! A corpus path is one of:
//! - a **text file** (any name not ending in `.jsonl`): one document, its whole text;
//! - a **JSONL file** (`.jsonl`): one JSON object per line, each with a string `text` field that
//!   is one document; blank lines are skipped, anything else that is not such an object is an
//!   error naming the file and the 1-based line;
//! - a **directory**: every `.txt`, `.md`, `.text` and `.jsonl` file below it, recursively, read
//!   as above in sorted path order (component by component, byte-wise), so the document order is
//!   the same on every machine. Other files are skipped, not sniffed: a guess about which files
//!   are text would change silently with their content. Hidden entries (names starting with `.`,
//!   such as `.git` or a cache directory kept inside the corpus) and symbolic links to
//!   directories (which could loop) are skipped as well.
//!
//! Any of these files may be compressed: a name ending in `.gz` (gzip) or `.zst` (zstd) is read
//! through its decoder and typed by the rest of its name (`part-0.jsonl.zst` is JSONL). A path
//! that is neither a regular file nor a directory (a device, a pipe) is refused.
//!
//! Text must be UTF-8; a file that is not is an error naming the file and the byte offset of
//! the first bad sequence. A leading byte-order mark is dropped, as it is an encoding artefact
//! rather than text. Empty documents are dropped; a corpus with no text at all is an error.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::shard::ContentKey;

/// File extensions read from a corpus directory (compared case-insensitively).
pub const TEXT_EXTENSIONS: [&str; 3] = ["txt", "md", "text"];

/// The extension of JSON-lines files.
pub const JSONL_EXTENSION: &str = "jsonl";

/// The field of a JSONL object that holds the document text.
pub const JSONL_TEXT_FIELD: &str = "text";

/// Why a corpus could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// Nothing exists at the corpus path.
    #[error("corpus path {path} does not exist")]
    NotFound { path: PathBuf },
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No document with any text was found.
    #[error(
        "corpus {path} holds no text: no non-empty .txt, .md, .text or .jsonl documents (or the file is empty)"
    )]
    Empty { path: PathBuf },
    /// A file is not valid UTF-8.
    #[error("{path} is not UTF-8: invalid byte sequence at byte offset {byte_offset}")]
    NonUtf8 { path: PathBuf, byte_offset: usize },
    /// A JSONL line is not an object with a string `text` field.
    #[error("{path} line {line}: {problem}")]
    BadJsonLine { path: PathBuf, line: usize, problem: String },
}

/// The documents of a corpus, in reading order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corpus {
    path: PathBuf,
    files: Vec<PathBuf>,
    documents: Vec<String>,
}

impl Corpus {
    /// Reads the corpus at `path` (a text file, a JSONL file or a directory; see the module doc).
    pub fn load(path: &Path) -> Result<Self, CorpusError> {
        let files = corpus_files(path)?;
        let mut documents = Vec::new();
        for file in &files {
            read_documents(file, &mut documents)?;
        }
        documents.retain(|text| !text.is_empty());
        if documents.is_empty() {
            return Err(CorpusError::Empty { path: path.to_owned() });
        }
        Ok(Self { path: path.to_owned(), files, documents })
    }

    /// The path the corpus was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The non-empty documents, in order.
    pub fn documents(&self) -> &[String] {
        &self.documents
    }

    /// Total UTF-8 bytes over all documents.
    pub fn total_bytes(&self) -> usize {
        self.documents.iter().map(String::len).sum()
    }

    /// A key over the documents' text and order (not the file names or times): the same text
    /// gives the same key on any machine, and any edit gives a different one.
    pub fn content_key(&self) -> ContentKey {
        let mut key = ContentKey::builder("corpus/v1").u64(self.documents.len() as u64);
        for document in &self.documents {
            key = key.bytes(document.as_bytes());
        }
        key.finish()
    }
}

/// The files a corpus path reads, in reading order: the path itself when it is a file, else
/// every corpus file below the directory in sorted path order (see the module doc).
pub fn corpus_files(path: &Path) -> Result<Vec<PathBuf>, CorpusError> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CorpusError::NotFound { path: path.to_owned() });
        }
        Err(source) => return Err(CorpusError::Io { path: path.to_owned(), source }),
    };
    if metadata.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        // Paths compare component by component (`a/z.md` before `a.text`), so the order
        // does not depend on how the separator byte sorts against names.
        files.sort();
        if files.is_empty() {
            return Err(CorpusError::Empty { path: path.to_owned() });
        }
        Ok(files)
    } else if metadata.is_file() {
        Ok(vec![path.to_owned()])
    } else {
        Err(CorpusError::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file or a directory"),
        })
    }
}

/// The compression suffixes read through a decoder: gzip and zstd.
pub const COMPRESSED_EXTENSIONS: [&str; 2] = ["gz", "zst"];

/// The path without a compression suffix, which names the content's own type
/// (`a.jsonl.zst` → `a.jsonl`).
fn content_path(path: &Path) -> &Path {
    if COMPRESSED_EXTENSIONS.iter().any(|ext| has_own_extension(path, ext)) {
        path.file_stem().map_or(path, Path::new)
    } else {
        path
    }
}

fn has_own_extension(path: &Path, wanted: &str) -> bool {
    path.extension().and_then(|ext| ext.to_str()).is_some_and(|ext| ext.eq_ignore_ascii_case(wanted))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with('.'))
}

/// Whether the content (compressed or not) has extension `wanted`.
fn has_extension(path: &Path, wanted: &str) -> bool {
    has_own_extension(content_path(path), wanted)
}

fn is_corpus_file(path: &Path) -> bool {
    TEXT_EXTENSIONS.iter().chain([&JSONL_EXTENSION]).any(|ext| has_extension(path, ext))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), CorpusError> {
    let io_error = |source| CorpusError::Io { path: dir.to_owned(), source };
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        if is_hidden(&path) {
            continue;
        }
        // symlink_metadata so a link to a directory is not followed (it could loop); a link to
        // a file is read through, since metadata() follows it below.
        let link_metadata =
            fs::symlink_metadata(&path).map_err(|source| CorpusError::Io { path: path.clone(), source })?;
        if link_metadata.is_dir() {
            collect_files(&path, files)?;
        } else if is_corpus_file(&path) {
            let metadata =
                fs::metadata(&path).map_err(|source| CorpusError::Io { path: path.clone(), source })?;
            if metadata.is_file() {
                files.push(path);
            }
        }
    }
    Ok(())
}

/// Reads one file's documents onto `documents`.
fn read_documents(path: &Path, documents: &mut Vec<String>) -> Result<(), CorpusError> {
    let bytes =
        read_maybe_compressed(path).map_err(|source| CorpusError::Io { path: path.to_owned(), source })?;
    let mut text = String::from_utf8(bytes).map_err(|e| CorpusError::NonUtf8 {
        path: path.to_owned(),
        byte_offset: e.utf8_error().valid_up_to(),
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    if has_extension(path, JSONL_EXTENSION) {
        read_jsonl(path, &text, documents)
    } else {
        documents.push(text);
        Ok(())
    }
}

/// A file's bytes, decompressed when its name ends in `.gz` or `.zst`.
fn read_maybe_compressed(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    if has_own_extension(path, "gz") {
        flate2::read::MultiGzDecoder::new(io::BufReader::new(file)).read_to_end(&mut bytes)?;
    } else if has_own_extension(path, "zst") {
        zstd::stream::read::Decoder::new(file)?.read_to_end(&mut bytes)?;
    } else {
        io::BufReader::new(file).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

fn read_jsonl(path: &Path, text: &str, documents: &mut Vec<String>) -> Result<(), CorpusError> {
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |problem: String| CorpusError::BadJsonLine { path: path.to_owned(), line: index + 1, problem };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(mut object) = value else {
            return Err(bad(format!("expected a JSON object, found {}", json_kind(&value))));
        };
        match object.remove(JSONL_TEXT_FIELD) {
            Some(serde_json::Value::String(text)) => documents.push(text),
            Some(other) => {
                return Err(bad(format!(
                    "field `{JSONL_TEXT_FIELD}` is {}, expected a string",
                    json_kind(&other)
                )));
            }
            None => return Err(bad(format!("no `{JSONL_TEXT_FIELD}` field"))),
        }
    }
    Ok(())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = dir.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn text_file_is_one_document_whatever_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "notes.log", "\u{feff}first line\nsecond line\n");
        let corpus = Corpus::load(&path).unwrap();
        // The byte-order mark is gone; the rest is kept verbatim.
        assert_eq!(corpus.documents(), ["first line\nsecond line\n"]);
        assert_eq!(corpus.files(), [path]);
        assert_eq!(corpus.total_bytes(), 23);
    }

    #[test]
    fn directory_is_read_recursively_in_sorted_order_skipping_hidden_and_unknown_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "b.txt", "bee");
        write(root, "a/z.md", "zed");
        write(root, "a/c.TXT", "sea");
        write(root, "a.text", "ay");
        write(root, "d.jsonl", "{\"text\": \"dee one\"}\n{\"text\": \"dee two\"}\n");
        write(root, "image.png", [0u8, 159, 146, 150]);
        write(root, ".hidden.txt", "hidden");
        write(root, ".cache/x.txt", "cached");
        write(root, "empty.txt", "");

        let corpus = Corpus::load(root).unwrap();
        assert_eq!(corpus.documents(), ["sea", "zed", "ay", "bee", "dee one", "dee two"]);
        let names: Vec<_> =
            corpus.files().iter().map(|f| f.strip_prefix(root).unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["a/c.TXT", "a/z.md", "a.text", "b.txt", "d.jsonl", "empty.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_link_to_a_directory_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sub/a.txt", "text");
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).unwrap();
        assert_eq!(Corpus::load(dir.path()).unwrap().documents(), ["text"]);
    }

    #[test]
    fn jsonl_lines_become_documents_and_blank_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "docs.jsonl",
            "{\"id\": 1, \"text\": \"first\\nwith a newline\"}\r\n\n   \n{\"text\": \"second\"}\n{\"text\": \"\"}\n",
        );
        let corpus = Corpus::load(&path).unwrap();
        assert_eq!(corpus.documents(), ["first\nwith a newline", "second"]);
    }

    fn bad_line(contents: &str) -> (PathBuf, usize, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "docs.jsonl", contents);
        match Corpus::load(&path) {
            Err(error @ CorpusError::BadJsonLine { .. }) => {
                let message = error.to_string();
                let CorpusError::BadJsonLine { path: file, line, .. } = error else { unreachable!() };
                assert_eq!(file, path);
                (file, line, message)
            }
            other => panic!("expected a bad JSONL line, got {other:?}"),
        }
    }

    #[test]
    fn jsonl_line_without_a_text_field_is_an_error_naming_file_and_line() {
        let (path, line, message) = bad_line("{\"text\": \"ok\"}\n\n{\"body\": \"no text\"}\n");
        assert_eq!(line, 3);
        assert_eq!(message, format!("{} line 3: no `text` field", path.display()));
    }

    #[test]
    fn jsonl_text_that_is_not_a_string_is_an_error() {
        let (_, line, message) = bad_line("{\"text\": 42}\n");
        assert_eq!(line, 1);
        assert!(message.ends_with("line 1: field `text` is a number, expected a string"), "{message}");
    }

    #[test]
    fn jsonl_line_that_is_not_a_json_object_is_an_error() {
        let (_, line, message) = bad_line("{\"text\": \"a\"}\n[\"text\"]\n");
        assert_eq!(line, 2);
        assert!(message.ends_with("expected a JSON object, found an array"), "{message}");

        let (_, line, message) = bad_line("{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": oops}\n");
        assert_eq!(line, 3);
        assert!(message.contains("line 3: not valid JSON"), "{message}");
    }

    #[test]
    fn non_utf8_file_is_an_error_naming_the_file_and_byte_offset() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.txt", "fine");
        let bad = write(dir.path(), "b.txt", b"caf\xc3\xa9 \xff\xfe rest");
        match Corpus::load(dir.path()) {
            Err(CorpusError::NonUtf8 { path, byte_offset }) => {
                assert_eq!(path, bad);
                // "café " is 6 bytes; the 0xff after it is the first invalid byte.
                assert_eq!(byte_offset, 6);
            }
            other => panic!("expected a UTF-8 error, got {other:?}"),
        }
    }

    #[test]
    fn missing_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere");
        match Corpus::load(&path) {
            Err(error @ CorpusError::NotFound { .. }) => {
                assert_eq!(error.to_string(), format!("corpus path {} does not exist", path.display()));
            }
            other => panic!("expected not found, got {other:?}"),
        }
    }

    #[test]
    fn corpus_without_any_text_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Corpus::load(dir.path()), Err(CorpusError::Empty { .. })), "empty directory");

        write(dir.path(), "empty.txt", "");
        write(dir.path(), "empty.jsonl", "{\"text\": \"\"}\n\n");
        write(dir.path(), "other.csv", "a,b\n");
        assert!(matches!(Corpus::load(dir.path()), Err(CorpusError::Empty { .. })), "only empty documents");
        assert!(matches!(Corpus::load(&dir.path().join("empty.txt")), Err(CorpusError::Empty { .. })));
    }

    #[test]
    fn content_key_follows_text_and_order_but_not_file_names() {
        let one = tempfile::tempdir().unwrap();
        write(one.path(), "a.txt", "alpha");
        write(one.path(), "b.txt", "beta");
        let two = tempfile::tempdir().unwrap();
        write(two.path(), "x.txt", "alpha");
        write(two.path(), "y.txt", "beta");
        let swapped = tempfile::tempdir().unwrap();
        write(swapped.path(), "a.txt", "beta");
        write(swapped.path(), "b.txt", "alpha");
        let joined = tempfile::tempdir().unwrap();
        write(joined.path(), "a.txt", "alphabeta");

        let key = |dir: &tempfile::TempDir| Corpus::load(dir.path()).unwrap().content_key();
        assert_eq!(key(&one), key(&two));
        assert_ne!(key(&one), key(&swapped));
        assert_ne!(key(&one), key(&joined));
    }
}
