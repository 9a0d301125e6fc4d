//! The check's report: compiler-style lines with the rendered SQL and a caret, a summary, or
//! JSON for CI tools.

use std::path::Path;

use super::describe::{Problem, Verdict};
use super::find::{Found, Unseen};

/// One described statement, with where it came from and what it ran as.
pub struct Checked<'a> {
    pub found: &'a Found,
    pub module: String,
    /// The module was a guess (no `[check.modules]` entry and no comment).
    pub guessed: bool,
    pub rendered: String,
    pub verdict: Verdict,
}

/// Totals for the summary.
pub struct Totals {
    pub files: usize,
    pub modules: usize,
    pub seconds: f64,
}

fn rel(path: &Path, base: &Path) -> String {
    let path = path.strip_prefix(base).unwrap_or(path);
    path.strip_prefix(".").unwrap_or(path).display().to_string()
}

/// The text report; `verbose` also lists the statements that were not checked.
pub fn text(
    checked: &[Checked<'_>],
    unseen: &[Unseen],
    totals: &Totals,
    base: &Path,
    verbose: bool,
) -> String {
    let mut out = String::new();
    let mut errors = 0;
    for c in checked {
        let Verdict::Errors(problems) = &c.verdict else {
            continue;
        };
        for p in problems {
            errors += 1;
            let at = format!(
                "{}:{}:{}",
                rel(&c.found.file, base),
                c.found.line,
                c.found.column
            );
            let code = p
                .code
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            out.push_str(&format!("{at}: error: {}{code}\n", p.message));
            out.push_str(&format!(
                "  = in module {}{}, by {}\n",
                c.module,
                if c.guessed { " (a guess)" } else { "" },
                c.found.method
            ));
            out.push_str(&caret(&c.rendered, p));
            out.push('\n');
        }
    }
    let guessed: Vec<&Checked<'_>> = checked.iter().filter(|c| c.guessed).collect();
    for c in &guessed {
        out.push_str(&format!(
            "{}:{}:{}: note: no module named; checked in module {}\n",
            rel(&c.found.file, base),
            c.found.line,
            c.found.column,
            c.module
        ));
    }
    if !guessed.is_empty() {
        out.push_str(
            "  = help: map the file in [check.modules] of pgdbm.toml, or put \
             `// pgdbm: module = NAME` above the enclosing function\n\n",
        );
    }
    let skipped: Vec<(&Checked<'_>, &String)> = checked
        .iter()
        .filter_map(|c| match &c.verdict {
            Verdict::Skipped(why) => Some((c, why)),
            _ => None,
        })
        .collect();
    if verbose {
        for u in unseen {
            out.push_str(&format!(
                "{}:{}:{}: not checked: the SQL of {} is {}\n",
                rel(&u.file, base),
                u.line,
                u.column,
                u.method,
                u.why
            ));
        }
        for (c, why) in &skipped {
            out.push_str(&format!(
                "{}:{}:{}: not checked: {why}\n",
                rel(&c.found.file, base),
                c.found.line,
                c.found.column
            ));
        }
    }
    let described = checked.len() - skipped.len();
    let ignored = unseen.iter().filter(|u| u.ignored).count();
    let run_time = unseen.len() - ignored;
    let failed = checked
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Errors(_)))
        .count();
    out.push_str(&format!(
        "checked {described} statement(s) in {} file(s) against {} module(s) in {:.2} s: {errors} \
         error(s) in {failed} statement(s); {} not checked ({run_time} built at run time, {} with \
         several statements{}){}\n",
        totals.files,
        totals.modules,
        totals.seconds,
        unseen.len() + skipped.len(),
        skipped.len(),
        if ignored > 0 {
            format!(", {ignored} marked `// pgdbm: ignore`")
        } else {
            String::new()
        },
        if verbose || unseen.len() + skipped.len() == 0 {
            ""
        } else {
            "; --verbose lists them"
        }
    ));
    out
}

/// The rendered SQL, indented, with a caret under the server's error position.
fn caret(sql: &str, p: &Problem) -> String {
    let mut out = String::new();
    let Some(pos) = p.position else {
        for line in sql.lines() {
            out.push_str(&format!("   | {line}\n"));
        }
        return out;
    };
    // The server counts characters from 1 over the whole text.
    let mut seen = 0;
    let mut marked = false;
    for line in sql.lines() {
        out.push_str(&format!("   | {line}\n"));
        let len = line.chars().count() + 1;
        if !marked && pos > seen && pos <= seen + len {
            let col = pos - seen - 1;
            out.push_str(&format!("   | {}^\n", " ".repeat(col)));
            marked = true;
        }
        seen += len;
    }
    if !marked {
        // Past the end ("syntax error at end of input"): after the last character.
        let last = sql.lines().last().map_or(0, |l| l.chars().count());
        out.push_str(&format!("   | {}^\n", " ".repeat(last)));
    }
    out
}

/// The JSON report.
pub fn json(
    checked: &[Checked<'_>],
    unseen: &[Unseen],
    totals: &Totals,
    base: &Path,
) -> serde_json::Value {
    let mut errors = Vec::new();
    let mut skipped = Vec::new();
    for c in checked {
        match &c.verdict {
            Verdict::Errors(problems) => {
                for p in problems {
                    errors.push(serde_json::json!({
                        "file": rel(&c.found.file, base),
                        "line": c.found.line,
                        "column": c.found.column,
                        "method": c.found.method,
                        "module": c.module,
                        "module_guessed": c.guessed,
                        "message": p.message,
                        "sqlstate": p.code,
                        "position": p.position,
                        "sql": c.rendered,
                    }));
                }
            }
            Verdict::Skipped(why) => skipped.push(serde_json::json!({
                "file": rel(&c.found.file, base),
                "line": c.found.line,
                "column": c.found.column,
                "why": why,
            })),
            Verdict::Ok => {}
        }
    }
    let unseen: Vec<_> = unseen
        .iter()
        .map(|u| {
            serde_json::json!({
                "file": rel(&u.file, base),
                "line": u.line,
                "column": u.column,
                "method": u.method,
                "why": u.why,
            })
        })
        .collect();
    serde_json::json!({
        "statements": checked.len() - skipped.len(),
        "files": totals.files,
        "modules": totals.modules,
        "seconds": totals.seconds,
        "errors": errors,
        "not_checked": {"run_time": unseen, "several_statements": skipped},
    })
}
