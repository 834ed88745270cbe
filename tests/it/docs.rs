//! The README and ARCHITECTURE.md say what is true: every option, variable,
//! exit code and module is documented.

use clap::CommandFactory;
use ipfs_cluster_bootstrap::cli::Cli;

fn read(name: &str) -> String {
    std::fs::read_to_string(crate::support::root().join(name)).unwrap()
}

#[test]
fn readme_lists_every_option_and_variable() {
    let readme = read("README.md");
    for arg in Cli::command().get_arguments() {
        if let Some(long) = arg.get_long() {
            if long != "help" && long != "version" {
                assert!(readme.contains(&format!("`--{long}")), "README lacks --{long}");
            }
        }
        if let Some(env) = arg.get_env() {
            let env = env.to_str().unwrap();
            assert!(readme.contains(&format!("`{env}`")), "README lacks {env}");
        }
    }
}

#[test]
fn readme_and_help_list_every_exit_code() {
    use ipfs_cluster_bootstrap::exit::code::*;
    let readme = read("README.md");
    let help = Cli::command().render_long_help().to_string();
    for c in [
        OK,
        USAGE,
        DATAERR,
        NOINPUT,
        UNAVAILABLE,
        SOFTWARE,
        OSERR,
        CANTCREAT,
        TEMPFAIL,
        CLUSTER_LOST,
        NOPERM,
        CONFIG,
    ] {
        assert!(
            readme.contains(&format!("\n| {c} |")),
            "README's exit-code table lacks {c}"
        );
        assert!(help.contains(&format!("{c} ")), "--help lacks exit code {c}");
    }
}

#[test]
fn architecture_names_every_module() {
    let arch = read("ARCHITECTURE.md");
    for entry in walk(&crate::support::root().join("src")) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name == "lib.rs" || name == "tests.rs" || name == "mod.rs" {
            continue;
        }
        assert!(arch.contains(&format!("`{name}`")), "ARCHITECTURE.md lacks {name}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
