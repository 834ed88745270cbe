//! What `ipfs-cluster-service daemon` (v1.1.6) accepts after its name, checked
//! as it parses them: urfave/cli v1 moves the command's own flags before the
//! other arguments, then Go's `flag` package reads `-name`, `--name`,
//! `-name=value` and, for its one string flag, `-j value`
//! (cmd/ipfs-cluster-service/main.go, the `daemon` command's Flags). An
//! unknown flag makes the daemon print "Incorrect Usage" and exit 0 without
//! running, and `-h` prints its help and exits 0: a container that restarts
//! for ever with nothing in its log but a usage text. Pure.

/// The daemon's flags (aliases share an entry) and whether each takes a value.
const FLAGS: &[(&[&str], Kind)] = &[
    (&["upgrade", "u"], Kind::Bool),
    (&["bootstrap", "j"], Kind::Refused),
    (&["leave", "x"], Kind::Bool),
    (&["stats"], Kind::Bool),
    (&["tracing"], Kind::Bool),
    (&["no-trust"], Kind::Bool),
    (&["help", "h"], Kind::Help),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// `--bootstrap`: this tool decides it.
    Refused,
    Help,
}

const ACCEPTED: &str = "--stats, --tracing, --no-trust, --leave (-x), --upgrade (-u)";

/// Every problem with `args` (the arguments after `daemon`), in order.
pub fn check(args: &[String]) -> Vec<String> {
    let mut errors = vec![];
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        i += 1;
        let Some(flag) = a.strip_prefix('-').filter(|f| !f.is_empty() && *f != "-") else {
            errors.push(format!(
                "daemon argument {a:?} is not a flag: ipfs-cluster-service daemon would ignore it (it takes {ACCEPTED}); \
                 ipfs-cluster-bootstrap's own options go before `daemon`"
            ));
            continue;
        };
        let flag = flag.strip_prefix('-').unwrap_or(flag);
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let kind = FLAGS.iter().find(|(names, _)| names.contains(&name)).map(|(_, k)| *k);
        match kind {
            Some(Kind::Bool) => {
                if let Some(v) = value.filter(|v| !is_go_bool(v)) {
                    errors.push(format!(
                        "daemon argument {a}: {v:?} is not a boolean (the daemon takes 1, 0, t, f, true, false)"
                    ));
                }
            }
            Some(Kind::Refused) => {
                let written = a.split('=').next().unwrap_or(a);
                errors.push(format!(
                    "daemon argument {written} is refused: ipfs-cluster-bootstrap decides --bootstrap itself \
                     (a raft peer given --bootstrap over its state wipes it)"
                ));
                if value.is_none() {
                    i += 1; // its value
                }
            }
            Some(Kind::Help) => errors.push(format!(
                "daemon argument {a} would make ipfs-cluster-service print its help and exit 0 without running"
            )),
            None if name.starts_with('-') || name.starts_with('=') || name.is_empty() => {
                errors.push(format!("daemon argument {a:?}: bad flag syntax"))
            }
            None => errors.push(format!(
                "daemon argument -{name} is not a flag of ipfs-cluster-service daemon v1.1.6, which would print \
                 \"Incorrect Usage\" and exit 0 without running (it takes {ACCEPTED}); ipfs-cluster-bootstrap's \
                 own options go before `daemon`"
            )),
        }
    }
    errors
}

/// Go's strconv.ParseBool.
fn is_go_bool(v: &str) -> bool {
    matches!(
        v,
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    )
}

#[cfg(test)]
mod tests {
    use super::check;

    fn errors(args: &[&str]) -> Vec<String> {
        check(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_daemons_own_flags_pass() {
        for args in [
            &[][..],
            &["--upgrade"],
            &["-u", "--stats", "-tracing", "--no-trust", "-x", "--leave=true"],
            &["--stats=false", "-upgrade=1"],
        ] {
            assert!(errors(args).is_empty(), "{args:?}: {:?}", errors(args));
        }
    }

    #[test]
    fn what_the_daemon_would_not_run_with_is_refused() {
        for (args, says) in [
            (&["--bootstrap", "/ip4/1.2.3.4/tcp/9096"][..], "--bootstrap is refused"),
            (&["-j=/ip4/1.2.3.4/tcp/9096"], "-j is refused"),
            (&["--j", "x"], "-j is refused"),
            (
                &["--expect", "3"],
                "-expect is not a flag of ipfs-cluster-service daemon",
            ),
            (&["-h"], "print its help"),
            (&["--stats=maybe"], "is not a boolean"),
            (&["---stats"], "bad flag syntax"),
            (&["extra"], "is not a flag"),
        ] {
            let e = errors(args);
            assert!(e.first().is_some_and(|e| e.contains(says)), "{args:?}: {e:?}");
        }
        // The value after --bootstrap is its value, not a stray argument.
        assert_eq!(errors(&["-j", "/ip4/1.2.3.4/tcp/9096", "--stats"]).len(), 1);
    }
}
