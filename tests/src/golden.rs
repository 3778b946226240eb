//! Golden files: generated text (schemas, pictures, macro expansions)
//! compared with a checked-in copy, whose `git diff` is the review.
//! `TASKGRAPH_BLESS=1` rewrites the copies instead of failing.

use std::path::Path;

/// Whether this run rewrites golden files.
pub fn blessing() -> bool {
    std::env::var_os("TASKGRAPH_BLESS").is_some_and(|v| v == "1")
}

/// A line diff (longest common subsequence), `-` for the checked-in file
/// and `+` for the current output, with two lines of context.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 2).min(ops.len() - 1);
        ops[lo..=hi].iter().any(|(op, _)| *op != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{op} {line}\n"));
        } else {
            skipped = true;
        }
    }
    if old.ends_with('\n') != new.ends_with('\n') {
        out.push_str("(the files differ in their final newline)\n");
    }
    out
}

/// Checks `current` against the file at `path` (or rewrites the file when
/// blessing); the error names the file, shows the diff and the command
/// that blesses.
pub fn check(path: &Path, current: &str, bless_command: &str) -> Result<(), String> {
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    if checked_in == current {
        return Ok(());
    }
    if blessing() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, current).map_err(|e| format!("write {}: {e}", path.display()))?;
        eprintln!("blessed {}", path.display());
        return Ok(());
    }
    Err(format!(
        "{} differs from what the code generates now:\n{}\nIf the change is intended, bless it with\n    TASKGRAPH_BLESS=1 {bless_command}\nand review the diff.",
        path.display(),
        diff(&checked_in, current)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines() {
        assert_eq!(diff("a\nb\nc\n", "a\nB\nc\nd\n"), "  a\n- b\n+ B\n  c\n+ d\n");
        let long: String = (0..20).map(|i| format!("{i}\n")).collect();
        let d = diff(&long, &long.replace("10\n", "ten\n"));
        assert!(d.contains("- 10\n+ ten\n") && !d.contains("  3\n"), "{d}");
    }
}
