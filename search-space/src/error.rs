//! Validation errors that name the field path and the reason.
//!
//! Every check in this crate reports *where* (a path such as `stages[1].block.mixers[0]`, in the
//! same notation a JSON document would use) and *why*, and collects all problems it can find
//! instead of stopping at the first: a user fixing a spec wants the whole list at once.

use std::fmt;

use serde::Serialize;

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the field, e.g. `stages[1].block.mixers[0]`; empty for the document itself.
    pub path: String,
    /// What is wrong, as a sentence fragment a user can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in one document; never empty when returned as an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError::new(path, message)])
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    /// Adds another set of errors, prefixing their paths with `prefix` (joined by `.`).
    pub fn extend_under(&mut self, prefix: &str, other: ValidationErrors) {
        for e in other.0 {
            let path = join_path(prefix, &e.path);
            self.0.push(FieldError { path, message: e.message });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// `Ok(value)` when no error was collected, otherwise `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.is_empty() { Ok(value) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Joins two path pieces: `join_path("model", "ffn.expand_ratio") == "model.ffn.expand_ratio"`;
/// an index piece (`[3]`) attaches without a dot.
pub fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// Errors from reading a document (JSON text) into one of this crate's types.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON, or a field has the wrong type, an unknown name or value.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// The document parsed but describes something invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Deserialises JSON text, reporting the path of the offending field on failure.
pub fn from_json_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(syntax_error)
}

/// Deserialises an already parsed JSON value, reporting the field path on failure.
pub fn from_json_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(syntax_error)
}

fn syntax_error(e: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = e.path().to_string();
    let path = if path == "." || path == "?" { "(document)".to_owned() } else { path };
    ParseError::Syntax { path, message: e.into_inner().to_string() }
}
