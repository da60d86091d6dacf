use clap::{Parser, Subcommand};
use reprise::{api, operator, telemetry};

/// reprise: an IT disaster-recovery plan, run as a Kubernetes operator.
#[derive(Parser)]
#[command(name = "reprise", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "REPRISE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<operator::RunOptions>),
    /// Print every CRD as YAML (multi-document).
    Crds {
        /// Write one file per CRD into this directory instead.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Print the API reference (Markdown), as docs/api.md holds it.
    Docs,
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    reprise::install_crypto_provider();
    match cli.command {
        Command::Run(opts) => {
            telemetry::init_tracing(cli.log_format);
            operator::run(*opts).await
        }
        Command::Crds { out_dir } => {
            for crd in api::crds() {
                let yaml = api::crd_yaml(&crd)?;
                match &out_dir {
                    Some(dir) => std::fs::write(dir.join(api::crd_file_name(&crd)), yaml)?,
                    None => print!("---\n{yaml}"),
                }
            }
            Ok(())
        }
        Command::Docs => {
            print!("{}", reprise::docs::api_reference());
            Ok(())
        }
        Command::Version => {
            println!("reprise {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
