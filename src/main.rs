//! Entry point: parse, start logging, run, map the outcome to an exit code.

use clap::Parser;
use ipfs_cluster_bootstrap::{app, cli::Cli, cli::LogFormat, config::Config, exit::code};

fn init_logging(format: LogFormat, level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            let ok = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            std::process::exit(if ok { code::OK } else { code::USAGE });
        }
    };
    init_logging(cli.log_format, &cli.log_level);
    let result = Config::new(cli, &|k| std::env::var(k).ok()).and_then(|cfg| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                ipfs_cluster_bootstrap::exit::Error::Internal(format!("cannot start the async runtime: {e}"))
            })?;
        rt.block_on(app::run(cfg))
    });
    let exit = match result {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(exit_code = e.exit_code(), "{e}");
            e.exit_code()
        }
    };
    std::process::exit(exit)
}
