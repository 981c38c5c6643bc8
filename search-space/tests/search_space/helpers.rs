use search_space::presets::preset;
use search_space::{Architecture, ModelSpec};

pub fn arch(name: &str) -> Architecture {
    preset(name).unwrap_or_else(|| panic!("preset {name} exists"))
}

pub fn expanded(name: &str) -> ModelSpec {
    arch(name).expand().expect("presets expand")
}

/// Relative difference |a - b| / b.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / b
}
