//! JSON Schemas (2020-12) of the types that read a word: mixer kinds, operators and mixer ratios.
//!
//! Their parsers trim surrounding whitespace and, for operators, ignore ASCII case and accept
//! short codes; each schema says exactly that: the canonical spellings as an `enum`, and every
//! accepted spelling as a `pattern`.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::genome::MixerRatio;
use crate::ops::{MixerKind, OpKind};

/// What `str::trim` removes: Unicode `White_Space`, spelled out so every regex engine agrees.
const SPACE: &str = r"[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*";

/// A word schema: `canonical` as an enum, or any of `accepted` (ASCII case ignored when
/// `any_case`) between optional whitespace.
fn word_schema(description: &str, canonical: &[&str], accepted: &[&str], any_case: bool) -> Schema {
    let spell = |word: &str| -> String {
        word.chars()
            .map(|c| {
                if any_case && c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    };
    let alternatives: Vec<String> = accepted.iter().map(|w| spell(w)).collect();
    let pattern = format!("^{SPACE}(?:{}){SPACE}$", alternatives.join("|"));
    json_schema!({
        "description": description,
        "anyOf": [
            { "type": "string", "enum": canonical },
            { "type": "string", "pattern": pattern }
        ]
    })
}

const MIXER_SPELLINGS: [&str; 10] =
    ["attention", "attn", "a", "mamba2", "m2", "deltanet", "d", "gated_deltanet", "gateddeltanet", "gd"];

impl JsonSchema for MixerKind {
    fn schema_name() -> Cow<'static, str> {
        "MixerKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let canonical: Vec<&str> = MixerKind::ALL.iter().map(|m| m.name()).collect();
        word_schema(
            "A token mixer kind. Written by its name; also read by its short code (A, M2, D, GD), in any \
             case, with surrounding whitespace ignored.",
            &canonical,
            &MIXER_SPELLINGS,
            true,
        )
    }
}

impl JsonSchema for OpKind {
    fn schema_name() -> Cow<'static, str> {
        "OpKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let canonical: Vec<&str> =
            MixerKind::ALL.iter().map(|m| m.code()).chain(std::iter::once(OpKind::Ffn.code())).collect();
        let accepted: Vec<&str> = MIXER_SPELLINGS.iter().copied().chain(["ffn", "f"]).collect();
        word_schema(
            "An operator of a layer pattern. Written by its short code; also read by its name, in any \
             case, with surrounding whitespace ignored.",
            &canonical,
            &accepted,
            true,
        )
    }
}

impl JsonSchema for MixerRatio {
    fn schema_name() -> Cow<'static, str> {
        "MixerRatio".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let ratios: Vec<&str> = MixerRatio::ALL.iter().map(|r| r.as_str()).collect();
        word_schema(
            "Mixer ratio of a block type, first kind to second; `0:1` is a block of one kind.",
            &ratios,
            &ratios,
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_patterns_accept_every_spelling_the_parsers_read() {
        let schema = MixerKind::json_schema(&mut SchemaGenerator::default());
        let pattern = schema.as_value()["anyOf"][1]["pattern"].as_str().unwrap().to_owned();
        assert!(pattern.contains("[gG][dD]"), "{pattern}");
        for word in MIXER_SPELLINGS {
            assert!(word.parse::<MixerKind>().is_ok(), "{word}");
        }
    }
}
