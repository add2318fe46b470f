//! The flash-sale report: `report.json` (everything measured), the text summary
//! ([`summary`]), and a self-contained `report.html` (`html`: inline SVG plots, no external
//! JS or CSS).

mod html;
mod summary;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;

use self::html::render_html;
pub use self::summary::{summary, throughput};
use crate::flashsale::Outcome;

/// Writes `report.json` and `report.html` into `dir`; returns the HTML's path.
pub fn write(outcome: &Outcome, dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join("report.json"), serde_json::to_vec_pretty(outcome)?)?;
    let html = dir.join("report.html");
    fs::write(&html, render_html(outcome))?;
    Ok(html)
}
