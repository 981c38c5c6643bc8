//! The `frontier` binary end to end: real processes, real files, exit codes and messages.

mod helpers;
mod lut;
mod space;
mod train;
