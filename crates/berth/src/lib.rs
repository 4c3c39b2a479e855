//! `berth serve`'s settings and their resolution, and the description of every metric, as a
//! library so the fuzz targets (`fuzz/`) can feed the configuration reader what an operator
//! might write; the binary is `main.rs`.

pub mod config;
pub mod metrics_help;
pub mod settings;
