//! The command line.

use std::path::PathBuf;

use clap::Parser;

/// Where the models run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

/// Training and decoding benchmarks of the worker's models, printed as tables.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(name = "bench", args_override_self = true)]
pub struct Args {
    /// Fewer steps and configurations: a smoke run of about a minute on two cores.
    #[arg(long)]
    pub quick: bool,
    /// Also write every measurement as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Train on this text (file, JSONL or directory; byte tokens) instead of random bytes.
    #[arg(long, value_name = "PATH")]
    pub corpus: Option<PathBuf>,
    /// Comma-separated subset of train,naive,decode,backends (default: all).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "train,naive,decode,backends",
          hide_default_value = true, value_parser = parse_section, action = clap::ArgAction::Set)]
    pub sections: Vec<String>,
    /// cpu (default) or cuda[:N] (needs the `cuda` feature).
    #[arg(long, value_name = "DEV", default_value = "cpu", hide_default_value = true, value_parser = parse_device)]
    pub device: DeviceArg,
}

/// The sections, in the order they run.
pub const SECTIONS: [&str; 4] = ["train", "naive", "decode", "backends"];

impl Args {
    pub fn wants(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

/// One name of `--sections`.
fn parse_section(text: &str) -> Result<String, String> {
    let section = text.trim();
    if SECTIONS.contains(&section) {
        Ok(section.to_owned())
    } else {
        Err(format!("unknown section {section:?}"))
    }
}

fn parse_device(text: &str) -> Result<DeviceArg, String> {
    if text == "cpu" {
        return Ok(DeviceArg::Cpu);
    }
    if text == "cuda" || text.starts_with("cuda:") {
        #[cfg(feature = "cuda")]
        {
            let index = match text.strip_prefix("cuda:") {
                Some(i) => i.parse().map_err(|_| format!("bad CUDA device index in {text:?}"))?,
                None => 0,
            };
            return Ok(DeviceArg::Cuda(index));
        }
        #[cfg(not(feature = "cuda"))]
        return Err("this build has no CUDA backend: rebuild with `--features cuda`".into());
    }
    Err(format!("unknown device {text:?} (cpu or cuda[:N])"))
}
