//! The bench's README table: rendered from the rows ([`table`]) and written between the
//! markers, keeping the rows the simulator's runs wrote there ([`update_readme`]).

use std::path::Path;

use anyhow::Context;

use super::config::Row;

/// README markers between which the bench writes its table.
pub const TABLE_START: &str = "<!-- bench:start -->";
/// End marker of the bench table.
pub const TABLE_END: &str = "<!-- bench:end -->";
/// How the README's row of a `flashsale --chaos` run begins; `bench` keeps it.
pub const CHAOS_ROW: &str = "| Sale under chaos";

/// The Markdown table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut out =
        String::from("| what | result | baseline (Health/Check) ratio | target | met | date | machine |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        let cell = |s: &str| if s.is_empty() { "—".to_owned() } else { s.replace('|', "\\|") };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {met} | {} | {} |\n",
            cell(&r.what),
            cell(&r.result),
            cell(&r.baseline),
            cell(&r.target),
            r.date,
            r.machine
        ));
    }
    out
}

/// Replaces the text between the bench markers of `readme` with `table`, keeping the rows the
/// flashsale simulator's runs wrote there: the whole sale, and the sale under chaos (after the
/// whole sale). Returns false (and changes nothing) when the markers are missing.
pub fn update_readme(readme: &Path, table_text: &str) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("cannot read {}", readme.display()))?;
    let (Some(start), Some(end)) = (text.find(TABLE_START), text.find(TABLE_END)) else { return Ok(false) };
    if end < start {
        return Ok(false);
    }
    let inside = &text[start + TABLE_START.len()..end];
    let mut table_text = table_text.to_owned();
    // A whole-sale row measured by `flashsale` wins over the bench's placeholder.
    if let Some(measured) =
        inside.lines().find(|l| l.starts_with("| Whole sale") && !l.contains("not run by bench"))
    {
        let kept: Vec<String> = table_text
            .lines()
            .map(|l| if l.starts_with("| Whole sale") { measured.to_owned() } else { l.to_owned() })
            .collect();
        table_text = kept.join("\n") + "\n";
    }
    if let Some(chaos) = inside.lines().find(|l| l.starts_with(CHAOS_ROW))
        && !table_text.contains(CHAOS_ROW)
    {
        let mut rows: Vec<&str> = table_text.lines().collect();
        let after = rows.iter().position(|l| l.starts_with("| Whole sale")).map_or(rows.len(), |i| i + 1);
        rows.insert(after, chaos);
        table_text = rows.join("\n") + "\n";
    }
    let updated = format!("{}{TABLE_START}\n{table_text}{}", &text[..start], &text[end..]);
    std::fs::write(readme, updated)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_table_is_replaced_between_markers() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("bench-readme-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let readme = dir.join("README.md");
        std::fs::write(
            &readme,
            format!("a\n{TABLE_START}\nold\n| Whole sale | 25 s |\n{CHAOS_ROW} | ok |\n{TABLE_END}\nb\n"),
        )?;
        let table = "| what |\n| Whole sale | not run by bench |\n| x |\n";
        assert!(update_readme(&readme, table)?);
        let text = std::fs::read_to_string(&readme)?;
        assert_eq!(
            text,
            format!(
                "a\n{TABLE_START}\n| what |\n| Whole sale | 25 s |\n{CHAOS_ROW} | ok |\n| x |\n{TABLE_END}\nb\n"
            )
        );
        std::fs::write(&readme, "no markers")?;
        assert!(!update_readme(&readme, table)?);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
