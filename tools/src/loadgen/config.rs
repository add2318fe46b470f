//! ghz's JSON configuration files (`ghz --config FILE`), read by `loadgen --config FILE`.
//!
//! The keys are ghz's: `call`, `host`, `insecure`, `data` (`d`), `metadata` (`m`),
//! `concurrency` (`c`), `total` (`n`), `duration` (`z`), `rps` (`r`), `connections`,
//! `timeout` (`t`), `name`, `output` (`o`); `proto`, `protoset`, `import-paths` and the rest
//! are accepted and ignored (the contract is compiled in). Durations are Go-style strings
//! (`"20s"`, `"500ms"`, `"1m"`).

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use serde::Deserialize;

/// A ghz configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GhzConfig {
    pub call: Option<String>,
    pub host: Option<String>,
    pub insecure: Option<bool>,
    #[serde(alias = "d")]
    pub data: Option<serde_json::Value>,
    #[serde(alias = "m")]
    pub metadata: Option<serde_json::Value>,
    #[serde(alias = "c")]
    pub concurrency: Option<usize>,
    #[serde(alias = "n")]
    pub total: Option<u64>,
    #[serde(alias = "z")]
    pub duration: Option<String>,
    #[serde(alias = "r")]
    pub rps: Option<f64>,
    pub connections: Option<usize>,
    #[serde(alias = "t")]
    pub timeout: Option<String>,
    pub name: Option<String>,
    #[serde(alias = "o")]
    pub output: Option<String>,
}

impl GhzConfig {
    /// Reads and parses a ghz JSON config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a ghz JSON config", path.display()))
    }
}

/// Parses a Go-style duration: `250ms`, `20s`, `1m`, `1m30s`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Ok(Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            bail!("bad duration {text:?}");
        }
        let value: f64 = rest[..digits].parse().with_context(|| format!("bad duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => bail!("bad duration unit {unit:?} in {text:?}"),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() -> anyhow::Result<()> {
        assert_eq!(parse_duration("20s")?, Duration::from_secs(20));
        assert_eq!(parse_duration("1m30s")?, Duration::from_secs(90));
        assert_eq!(parse_duration("250ms")?, Duration::from_millis(250));
        assert_eq!(parse_duration("3")?, Duration::from_secs(3));
        assert!(parse_duration("3 parsecs").is_err());
        Ok(())
    }

    #[test]
    fn short_keys_are_aliases() -> anyhow::Result<()> {
        let c: GhzConfig =
            serde_json::from_str(r#"{"call":"a.B/C","n":5,"c":2,"d":{"x":1},"proto":"x.proto"}"#)?;
        assert_eq!((c.total, c.concurrency), (Some(5), Some(2)));
        assert!(c.data.is_some());
        Ok(())
    }
}
