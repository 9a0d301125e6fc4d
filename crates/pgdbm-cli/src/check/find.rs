//! Finding the SQL in Rust sources: each string given as the SQL of a query method, with the
//! number of parameters passed and, for `fetch_*_as::<T>`, the row type; the `FromRow` structs
//! of each crate; and the calls whose SQL is built at run time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

use crate::error::{CliError, CliResult};

/// Query methods whose first argument is SQL, with how many arguments they take; the second
/// argument is the parameters (except for `executemany`, whose rows come as an iterator).
const METHODS: &[(&str, usize)] = &[
    ("execute", 2),
    ("execute_and_return_id", 2),
    ("executemany", 2),
    ("fetch_value", 2),
    ("fetch_value_at", 3),
    ("fetch_one", 2),
    ("fetch_all", 2),
    ("fetch_as_model", 2),
    ("fetch_all_as_model", 2),
    ("fetch_one_as", 2),
    ("fetch_all_as", 2),
    ("fetch_exactly_one", 2),
    ("fetch_exactly_one_as", 2),
    ("fetch_column", 2),
    ("fetch_stream", 2),
    ("fetch_stream_owned", 2),
];

/// One SQL statement found in the sources.
#[derive(Debug, Clone)]
pub struct Found {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub method: String,
    pub sql: String,
    /// Parameters passed at the call site, when written as a slice literal.
    pub args: Option<usize>,
    /// `T` of `fetch_*_as::<T>`.
    pub row_type: Option<String>,
    /// From a `// pgdbm: module = name` comment on an enclosing item.
    pub module: Option<String>,
    /// The crate it is in (the directory of its Cargo.toml).
    pub krate: PathBuf,
}

/// A call whose SQL the sources do not show (built at run time).
#[derive(Debug, Clone)]
pub struct Unseen {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub method: String,
    pub why: String,
    /// Marked `// pgdbm: ignore`, rather than built at run time.
    pub ignored: bool,
}

/// A struct deriving `FromRow`: its fields as columns.
#[derive(Debug, Clone)]
pub struct RowStruct {
    pub fields: Vec<RowField>,
}

#[derive(Debug, Clone)]
pub struct RowField {
    /// The field's name.
    pub name: String,
    /// The column it reads (`rename`, else the field's name).
    pub column: String,
    /// The Rust type as written, without spaces (`Option<i64>`).
    pub ty: String,
    /// `default`, `flatten`, `skip` or `json`: not checked against a column.
    pub unchecked: bool,
    pub json: bool,
}

/// Everything found in a set of source trees.
#[derive(Debug, Default)]
pub struct Sources {
    pub statements: Vec<Found>,
    pub unseen: Vec<Unseen>,
    /// By crate, then struct name.
    pub rows: HashMap<PathBuf, HashMap<String, RowStruct>>,
    pub files: usize,
}

/// Reads every `.rs` file under `roots`.
pub fn scan(roots: &[PathBuf]) -> CliResult<Sources> {
    let mut files = Vec::new();
    for root in roots {
        if !root.exists() {
            return Err(CliError::Config(format!(
                "source path {} does not exist",
                root.display()
            )));
        }
        rust_files(root, &mut files);
    }
    files.sort();
    files.dedup();
    let mut parsed = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::Config(format!("cannot read {}: {e}", file.display())))?;
        let ast = syn::parse_file(&text).map_err(|e| {
            let at = e.span().start();
            CliError::Config(format!(
                "{}:{}:{}: cannot parse: {e}",
                file.display(),
                at.line,
                at.column + 1
            ))
        })?;
        parsed.push((file.clone(), krate_of(file), text, ast));
    }
    // Constants and `FromRow` structs of each crate first: calls may use them from any file.
    // A name defined twice in a crate (with other values) is ambiguous there: `None`.
    let mut consts: HashMap<PathBuf, HashMap<String, Option<String>>> = HashMap::new();
    let mut rows: HashMap<PathBuf, HashMap<String, Option<RowStruct>>> = HashMap::new();
    let mut own = Vec::with_capacity(parsed.len());
    for (_, krate, _, ast) in &parsed {
        let mut items = Items::default();
        items.visit_file(ast);
        let crate_consts = consts.entry(krate.clone()).or_default();
        for (name, value) in &items.consts {
            crate_consts
                .entry(name.clone())
                .and_modify(|v| {
                    if v.as_ref() != Some(value) {
                        *v = None;
                    }
                })
                .or_insert_with(|| Some(value.clone()));
        }
        let crate_rows = rows.entry(krate.clone()).or_default();
        for (name, row) in items.rows {
            crate_rows
                .entry(name)
                .and_modify(|v| *v = None)
                .or_insert(Some(row));
        }
        own.push(items.consts);
    }
    let mut sources = Sources {
        files: files.len(),
        rows: rows
            .into_iter()
            .map(|(k, r)| {
                (
                    k,
                    r.into_iter().filter_map(|(n, r)| Some((n, r?))).collect(),
                )
            })
            .collect(),
        ..Sources::default()
    };
    for ((file, krate, text, ast), own) in parsed.iter().zip(own) {
        // The file's own constants first, then the crate's unambiguous ones.
        let mut visible: HashMap<String, String> = consts
            .get(krate)
            .into_iter()
            .flatten()
            .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
            .collect();
        visible.extend(own);
        let mut calls = Calls {
            file,
            krate,
            consts: &visible,
            comments: module_comments(text),
            modules: Vec::new(),
            out: &mut sources,
        };
        calls.visit_file(ast);
    }
    Ok(sources)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The nearest directory above `file` with a Cargo.toml (the file's own directory if none).
fn krate_of(file: &Path) -> PathBuf {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.join("Cargo.toml").is_file() {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    file.parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// What a `// pgdbm: ...` comment says of the item below it.
#[derive(Debug, Clone)]
enum Mark {
    /// `// pgdbm: module = name`
    Module(String),
    /// `// pgdbm: ignore`: its statements are not checked (listed with `--verbose`).
    Ignore,
}

/// `// pgdbm: module = name` and `// pgdbm: ignore` comments, by the line of the item they
/// stand above (the next line that is neither blank, a comment nor an attribute).
fn module_comments(text: &str) -> HashMap<usize, Mark> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix("//") else {
            continue;
        };
        let Some(rest) = rest.trim().strip_prefix("pgdbm:") else {
            continue;
        };
        let mark = match rest.split_once('=') {
            Some((key, value)) if key.trim() == "module" => {
                Mark::Module(value.trim().trim_matches('"').to_owned())
            }
            None if rest.trim() == "ignore" => Mark::Ignore,
            _ => continue,
        };
        let item = (i + 1..lines.len()).find(|&j| {
            let t = lines[j].trim();
            !(t.is_empty() || t.starts_with("//") || t.starts_with("#["))
        });
        if let Some(j) = item {
            out.insert(j + 1, mark);
        }
    }
    out
}

/// The `const`/`static` strings and the `FromRow` structs of one file.
#[derive(Default)]
struct Items {
    consts: HashMap<String, String>,
    rows: HashMap<String, RowStruct>,
}

impl<'ast> Visit<'ast> for Items {
    fn visit_item_const(&mut self, c: &'ast syn::ItemConst) {
        if let Some(s) = literal(&c.expr, &HashMap::new()) {
            self.consts.insert(c.ident.to_string(), s);
        }
        syn::visit::visit_item_const(self, c);
    }

    fn visit_impl_item_const(&mut self, c: &'ast syn::ImplItemConst) {
        if let Some(s) = literal(&c.expr, &HashMap::new()) {
            self.consts.insert(c.ident.to_string(), s);
        }
        syn::visit::visit_impl_item_const(self, c);
    }

    fn visit_item_static(&mut self, s: &'ast syn::ItemStatic) {
        if let Some(v) = literal(&s.expr, &HashMap::new()) {
            self.consts.insert(s.ident.to_string(), v);
        }
        syn::visit::visit_item_static(self, s);
    }

    fn visit_item_struct(&mut self, s: &'ast syn::ItemStruct) {
        if derives_from_row(&s.attrs) {
            if let syn::Fields::Named(named) = &s.fields {
                let fields = named.named.iter().filter_map(row_field).collect();
                self.rows.insert(s.ident.to_string(), RowStruct { fields });
            }
        }
        syn::visit::visit_item_struct(self, s);
    }
}

fn derives_from_row(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive")
            && a.parse_args_with(
                syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
            )
            .is_ok_and(|paths| {
                paths
                    .iter()
                    .any(|p| p.segments.last().is_some_and(|s| s.ident == "FromRow"))
            })
    })
}

fn row_field(f: &syn::Field) -> Option<RowField> {
    let name = f.ident.as_ref()?.to_string();
    let name = name.trim_start_matches("r#").to_owned();
    let mut field = RowField {
        column: name.clone(),
        name,
        ty: type_text(&f.ty),
        unchecked: false,
        json: false,
    };
    for attr in f.attrs.iter().filter(|a| a.path().is_ident("pgdbm")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                field.column = lit.value();
            } else if meta.path.is_ident("json") {
                field.json = true;
            } else {
                // default, flatten, skip: the column may be absent.
                field.unchecked = true;
            }
            Ok(())
        });
    }
    Some(field)
}

/// A type as written, without spaces: `Option<chrono::DateTime<chrono::Utc>>`.
fn type_text(ty: &syn::Type) -> String {
    quote::ToTokens::to_token_stream(ty)
        .to_string()
        .replace(' ', "")
}

/// The string an expression stands for: a literal, a reference to one, `concat!` of
/// literals, or a `const`/`static` string named by its last path segment.
fn literal(e: &syn::Expr, consts: &HashMap<String, String>) -> Option<String> {
    match e {
        // As rustc reads it: a raw string's CRLF line ends become LF.
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Some(s.value().replace("\r\n", "\n")),
        syn::Expr::Reference(r) => literal(&r.expr, consts),
        syn::Expr::Paren(p) => literal(&p.expr, consts),
        syn::Expr::Group(g) => literal(&g.expr, consts),
        syn::Expr::Path(p) => consts
            .get(&p.path.segments.last()?.ident.to_string())
            .cloned(),
        syn::Expr::Macro(m) if m.mac.path.is_ident("concat") => {
            let parts = m
                .mac
                .parse_body_with(
                    syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated,
                )
                .ok()?;
            parts.iter().map(|p| literal(p, consts)).collect()
        }
        _ => None,
    }
}

/// Why an SQL argument cannot be read: what it is.
fn unseen_why(e: &syn::Expr) -> String {
    match e {
        syn::Expr::Reference(r) => unseen_why(&r.expr),
        syn::Expr::Macro(m) => format!(
            "built at run time by {}!",
            m.mac
                .path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default()
        ),
        syn::Expr::Path(_) => "a variable or a constant defined elsewhere".into(),
        syn::Expr::Call(_) | syn::Expr::MethodCall(_) => "the result of a call".into(),
        _ => "an expression".into(),
    }
}

/// How many parameters an argument passes, when it is a slice or array literal.
fn arg_count(e: &syn::Expr) -> Option<usize> {
    match e {
        syn::Expr::Reference(r) => arg_count(&r.expr),
        syn::Expr::Array(a) => Some(a.elems.len()),
        syn::Expr::Paren(p) => arg_count(&p.expr),
        _ => None,
    }
}

/// The query calls of one file.
struct Calls<'a> {
    file: &'a Path,
    krate: &'a Path,
    consts: &'a HashMap<String, String>,
    comments: HashMap<usize, Mark>,
    /// The `// pgdbm:` mark of each enclosing item, innermost last.
    modules: Vec<Option<Mark>>,
    out: &'a mut Sources,
}

impl Calls<'_> {
    fn enter(&mut self, line: usize) {
        self.modules.push(self.comments.get(&line).cloned());
    }

    fn module(&self) -> Option<String> {
        self.modules.iter().rev().flatten().find_map(|m| match m {
            Mark::Module(name) => Some(name.clone()),
            Mark::Ignore => None,
        })
    }

    fn ignored(&self) -> bool {
        self.modules
            .iter()
            .flatten()
            .any(|m| matches!(m, Mark::Ignore))
    }

    fn call(&mut self, call: &syn::ExprMethodCall) {
        let method = call.method.to_string();
        let args: Vec<&syn::Expr> = call.args.iter().collect();
        let (sql, params) = if method == "add_prepared_statement" && args.len() == 2 {
            (args[1], None)
        } else {
            match METHODS.iter().find(|(m, _)| *m == method) {
                Some((_, n)) if args.len() == *n => (args[0], Some(args[1])),
                _ => return,
            }
        };
        let at = sql.span().start();
        let (line, column) = (at.line, at.column + 1);
        if self.ignored() {
            self.out.unseen.push(Unseen {
                file: self.file.to_path_buf(),
                line,
                column,
                method,
                why: "in an item marked `// pgdbm: ignore`".into(),
                ignored: true,
            });
            return;
        }
        let Some(text) = literal(sql, self.consts) else {
            self.out.unseen.push(Unseen {
                file: self.file.to_path_buf(),
                line,
                column,
                method,
                why: unseen_why(sql),
                ignored: false,
            });
            return;
        };
        let row_type = method
            .ends_with("_as")
            .then_some(call.turbofish.as_ref())
            .flatten()
            .and_then(|t| t.args.first())
            .and_then(|a| match a {
                syn::GenericArgument::Type(syn::Type::Path(p)) => {
                    p.path.segments.last().map(|s| s.ident.to_string())
                }
                _ => None,
            });
        let args = match method.as_str() {
            "executemany" | "add_prepared_statement" => None,
            _ => params.and_then(arg_count),
        };
        self.out.statements.push(Found {
            file: self.file.to_path_buf(),
            line,
            column,
            method,
            sql: text,
            args,
            row_type,
            module: self.module(),
            krate: self.krate.to_path_buf(),
        });
    }
}

impl<'ast> Visit<'ast> for Calls<'_> {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.enter(f.sig.fn_token.span.start().line);
        syn::visit::visit_item_fn(self, f);
        self.modules.pop();
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.enter(f.sig.fn_token.span.start().line);
        syn::visit::visit_impl_item_fn(self, f);
        self.modules.pop();
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        self.enter(i.impl_token.span.start().line);
        syn::visit::visit_item_impl(self, i);
        self.modules.pop();
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.enter(m.mod_token.span.start().line);
        syn::visit::visit_item_mod(self, m);
        self.modules.pop();
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.call(call);
        syn::visit::visit_expr_method_call(self, call);
    }

    /// Calls inside macros whose arguments are expressions (`tokio::join!`, `try_join!`,
    /// `assert!`, `vec!`...); other macro bodies are not read.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let args = m.parse_body_with(
            syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated,
        );
        if let Ok(args) = args {
            for arg in &args {
                self.visit_expr(arg);
            }
        }
        syn::visit::visit_macro(self, m);
    }
}
