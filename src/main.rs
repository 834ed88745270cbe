//! Entry point: parse, start logging, run, map the outcome to an exit code.

use ipfs_cluster_bootstrap::{cli::Cli, cli::LogFormat, cmd, config::Config, exit::code};

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    // `info`, `debug,aws=warn`: a default level and per-target levels.
    let filter: Targets = level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_ansi(false).with_filter(filter))
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .init(),
    }
}

/// The `BOOTSTRAP_*` variable a rejected value came from, when it was not
/// given on the command line.
fn from_env(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if arg == "[MODE]" {
        // The mode is positional: it came from BOOTSTRAP_MODE when that
        // holds the rejected value.
        let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue) else {
            return None;
        };
        let var = "BOOTSTRAP_MODE";
        return (std::env::var(var).ok().as_deref() == Some(value.as_str())).then(|| var.to_owned());
    }
    let flag = arg.split_whitespace().next()?;
    let name = flag.strip_prefix("--")?;
    let var = format!("BOOTSTRAP_{}", name.replace('-', "_").to_uppercase());
    let on_command_line = std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    (std::env::var_os(&var).is_some() && !on_command_line).then_some(var)
}

fn main() {
    // The slot lock's watchdog (started by this binary before it execs a daemon).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) == Some(ipfs_cluster_bootstrap::watchdog::ARG) {
        let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(ipfs_cluster_bootstrap::watchdog::main(&rest));
    }
    if let Some(help) = Cli::mode_help(std::env::args_os()) {
        print!("{help}");
        std::process::exit(code::OK);
    }
    let cli = match Cli::try_parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            if let Some(var) = from_env(&e) {
                eprintln!("(the value came from the environment variable {var})");
            }
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
        rt.block_on(cmd::main(cfg))
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
