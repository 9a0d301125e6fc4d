//! `pgdbm generate config`: a commented pgdbm.toml to start from.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::error::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Print a commented pgdbm.toml (or write it with --output; never overwrites).
    Config {
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
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

pub fn run(cmd: GenerateCommand) -> CliResult {
    let GenerateCommand::Config { output } = cmd;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_is_a_valid_config() {
        let file = crate::config::parse(super::TEMPLATE, std::path::Path::new("t.toml"), |_| None)
            .expect("parses");
        assert_eq!(file.project.default_env.as_deref(), Some("dev"));
        assert!(file.environments.contains_key("dev"));
    }
}
