//! `pgdbm generate config`: a commented pgdbm.toml to start from.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::config::Settings;
use crate::error::{CliError, CliResult};
use crate::util;

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Print a commented pgdbm.toml (or write it with --output; never overwrites).
    Config {
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print a Rust struct for a table of the live database, deriving pgdbm::FromRow and serde.
    Model {
        /// The table.
        table: String,
        /// Its schema.
        #[arg(long, short, default_value = "public")]
        schema: String,
    },
}

const TEMPLATE: &str = r#"# pgdbm.toml: read by the pgdbm CLI (Rust) and the Python pgdbm CLI alike.
# ${VAR} is replaced by the environment variable VAR in any string; $$ is a literal $.

[project]
name = "myapp"
# The environment used without --env / PGDBM_ENV.
default_env = "dev"

[environments.dev]
# Either a URL (`url` or `connection_string`) ...
url = "postgresql://postgres@localhost:5432/myapp_dev"
# ... or the parts (a URL wins when both are given):
# host = "localhost"
# port = 5432
# database = "myapp_dev"
# user = "postgres"
# password = "${DB_PASSWORD}"
# The schema of the default module when there is no [modules] section:
# schema = "public"

# [environments.prod]
# url = "postgresql://app:${DB_PASSWORD}@db.example.com:5432/myapp"
# ssl_enabled = true
# ssl_mode = "verify-full"              # require | verify-ca | verify-full
# ssl_ca_file = "/etc/ssl/certs/db-ca.pem"
# ssl_cert_file = "client.pem"          # mutual TLS (optional)
# ssl_key_file = "client.key"

# One section per module; each is migrated into its own schema, dependencies first.
# Without any [modules], the files in ./migrations are applied (module "default").
# [modules.users]
# migrations_path = "migrations/users"  # relative to this file
# schema = "users"                      # default: the module's name
# depends_on = []
#
# [modules.orders]
# migrations_path = "migrations/orders"
# schema = "orders"
# depends_on = ["users"]
"#;

/// `generate config` needs no configuration; `generate model` does (it reads the database).
pub fn needs_settings(cmd: &GenerateCommand) -> bool {
    matches!(cmd, GenerateCommand::Model { .. })
}

pub async fn run(cmd: GenerateCommand, settings: Option<&Settings>) -> CliResult {
    let output = match cmd {
        GenerateCommand::Config { output } => output,
        GenerateCommand::Model { table, schema } => {
            let settings = settings.ok_or_else(|| {
                CliError::Usage("generate model needs the database settings".into())
            })?;
            return model(settings, &table, &schema).await;
        }
    };
    match output {
        None => print!("{TEMPLATE}"),
        Some(path) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| f.write_all(TEMPLATE.as_bytes()))
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

async fn model(settings: &Settings, table: &str, schema: &str) -> CliResult {
    pgdbm::validate_identifier(table, "table")?;
    pgdbm::validate_identifier(schema, "schema")?;
    let db = util::manager(settings.db()?).await?;
    let rows = db
        .fetch_all(
            "SELECT a.attname::text, t.typname::text, t.typtype::text, \
                    coalesce(e.typname, '')::text, a.attnotnull \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    if rows.is_empty() {
        return Err(CliError::Failed(format!(
            "table {schema}.{table} not found (or has no columns)"
        )));
    }
    let mut columns = Vec::new();
    for r in &rows {
        columns.push(Column {
            name: r.get(0)?,
            typname: r.get(1)?,
            typtype: r.get(2)?,
            element: r.get(3)?,
            not_null: r.get(4)?,
        });
    }
    print!("{}", render(schema, table, &columns));
    Ok(())
}

struct Column {
    name: String,
    typname: String,
    /// `pg_type.typtype`: `b` base, `e` enum, `d` domain, `c` composite, ...
    typtype: String,
    /// For arrays, the element type's name.
    element: String,
    not_null: bool,
}

/// The Rust type for a PostgreSQL type name, or `None` when there is no ready mapping.
fn rust_type(typname: &str) -> Option<&'static str> {
    Some(match typname {
        "bool" => "bool",
        "int2" => "i16",
        "int4" => "i32",
        "int8" => "i64",
        "float4" => "f32",
        "float8" => "f64",
        "oid" => "u32",
        "text" | "varchar" | "bpchar" | "name" | "citext" => "String",
        "char" => "i8",
        "bytea" => "Vec<u8>",
        "uuid" => "pgdbm::uuid::Uuid",
        "json" | "jsonb" => "pgdbm::serde_json::Value",
        "timestamp" => "pgdbm::chrono::NaiveDateTime",
        "timestamptz" => "pgdbm::chrono::DateTime<pgdbm::chrono::Utc>",
        "date" => "pgdbm::chrono::NaiveDate",
        "time" => "pgdbm::chrono::NaiveTime",
        "numeric" => "pgdbm::types::Numeric",
        "inet" | "cidr" => "pgdbm::types::Inet",
        "interval" => "pgdbm::types::Interval",
        _ => return None,
    })
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod",
    "move", "mut", "pub", "ref", "return", "static", "struct", "trait", "true", "try", "type",
    "unsafe", "use", "where", "while", "yield", "abstract", "become", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual",
];

fn field_name(column: &str) -> (String, bool) {
    let mut f = String::new();
    for c in column.chars() {
        if c.is_ascii_alphanumeric() {
            f.push(c.to_ascii_lowercase());
        } else if !f.ends_with('_') {
            f.push('_');
        }
    }
    if f.is_empty() || f.starts_with(|c: char| c.is_ascii_digit()) {
        f.insert(0, '_');
    }
    let renamed = f != column;
    if KEYWORDS.contains(&f.as_str()) {
        if matches!(f.as_str(), "crate" | "self" | "super") {
            f.push('_');
            return (f, true);
        }
        return (format!("r#{f}"), renamed);
    }
    (f, renamed)
}

/// `order_items` -> `OrderItem`: the table's words in UpperCamelCase, the last one singular.
fn struct_name(table: &str) -> String {
    let words: Vec<&str> = table.split('_').filter(|p| !p.is_empty()).collect();
    let last = words.len().saturating_sub(1);
    words
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let word = if i == last {
                singular(p)
            } else {
                (*p).to_owned()
            };
            let mut c = word.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<String>()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .to_owned()
}

/// English plurals as table names use them: `accounts`, `categories`, `boxes`, `statuses`.
/// Words that only look plural (`address`, `status`, `news`) keep their `s`.
fn singular(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    let keep = ["ss", "us", "is", "news", "series", "species"];
    if word.len() < 4 || keep.iter().any(|k| lower.ends_with(k)) {
        return word.to_owned();
    }
    if let Some(stem) = lower.strip_suffix("ies") {
        return format!("{}y", &word[..stem.len()]);
    }
    for ending in ["sses", "xes", "ches", "shes", "uses"] {
        if lower.ends_with(ending) {
            return word[..word.len() - 2].to_owned();
        }
    }
    match lower.strip_suffix('s') {
        Some(stem) => word[..stem.len()].to_owned(),
        None => word.to_owned(),
    }
}

fn render(schema: &str, table: &str, columns: &[Column]) -> String {
    let mut name = struct_name(table);
    if name.is_empty() {
        name = "Row".into();
    }
    let mut out = format!(
        "// Generated by `pgdbm generate model {table}`. It needs only the pgdbm crate: chrono,\n\
         // uuid, serde_json and serde are used through pgdbm's re-exports.\n\
         \n\
         /// A row of `{schema}.{table}`.\n\
         #[derive(Debug, Clone, pgdbm::FromRow, pgdbm::serde::Serialize, pgdbm::serde::Deserialize)]\n\
         #[serde(crate = \"pgdbm::serde\")]\n\
         pub struct {name} {{\n"
    );
    for c in columns {
        let (field, renamed) = field_name(&c.name);
        let (base, note) = if c.typtype == "e" {
            (
                "String".to_owned(),
                Some(format!("enum type {}: read as its label", c.typname)),
            )
        } else if !c.element.is_empty() {
            match rust_type(&c.element) {
                Some(t) => (format!("Vec<{t}>"), None),
                None => (
                    "String".to_owned(),
                    Some(format!(
                        "array of {}: no ready mapping; select it as text",
                        c.element
                    )),
                ),
            }
        } else {
            match rust_type(&c.typname) {
                Some(t) => (t.to_owned(), None),
                None => (
                    "String".to_owned(),
                    Some(format!(
                        "type {}: no ready mapping; select it as `{}::text`",
                        c.typname, c.name
                    )),
                ),
            }
        };
        let ty = if c.not_null {
            base
        } else {
            format!("Option<{base}>")
        };
        if let Some(note) = note {
            out.push_str(&format!("    // {note}\n"));
        }
        if renamed {
            out.push_str(&format!(
                "    #[pgdbm(rename = {:?})]\n    #[serde(rename = {:?})]\n",
                c.name, c.name
            ));
        }
        out.push_str(&format!("    pub {field}: {ty},\n"));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_types() {
        let col = |name: &str, typname: &str, not_null: bool| Column {
            name: name.into(),
            typname: typname.into(),
            typtype: "b".into(),
            element: String::new(),
            not_null,
        };
        let text = render(
            "public",
            "user_accounts",
            &[
                col("id", "int8", true),
                col("type", "text", false),
                col("Created At", "timestamptz", true),
            ],
        );
        assert!(text.contains("pub struct UserAccount {"), "{text}");
        assert!(text.contains("pub id: i64,"), "{text}");
        assert!(text.contains("pub r#type: Option<String>,"), "{text}");
        assert!(text.contains("#[pgdbm(rename = \"Created At\")]"), "{text}");
        assert!(
            text.contains("pub created_at: pgdbm::chrono::DateTime<pgdbm::chrono::Utc>,"),
            "{text}"
        );
    }

    #[test]
    fn struct_names_are_singular() {
        for (table, name) in [
            ("accounts", "Account"),
            ("order_items", "OrderItem"),
            ("categories", "Category"),
            ("boxes", "Box"),
            ("statuses", "Status"),
            ("addresses", "Address"),
            ("address", "Address"),
            ("status", "Status"),
            ("news", "News"),
            ("every_type", "EveryType"),
            ("users", "User"),
        ] {
            assert_eq!(struct_name(table), name, "{table}");
        }
    }

    #[test]
    fn the_template_is_a_valid_config() {
        let file = crate::config::parse(super::TEMPLATE, std::path::Path::new("t.toml"), |_| None)
            .expect("parses");
        assert_eq!(file.project.default_env.as_deref(), Some("dev"));
        assert!(file.environments.contains_key("dev"));
    }
}
