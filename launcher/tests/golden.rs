//! Golden tests of the planner: each file in tests/golden/ holds a command line (plus optional
//! host-fact and environment switches) and the complete plan it must produce. Regenerate after an
//! intended change with `UPDATE_GOLDEN=1 cargo test -p vmspawn --test golden`, then review the diff.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vmspawn::cli::{self, Action, ParseEnv};
use vmspawn::parse::split_words;
use vmspawn::plan::{self, Plan};
use vmspawn::process::{EnvPlan, Jail, Lifetime, ProcessPlan, Stop};
use vmspawn::sandbox::SandboxRules;
use vmspawn::testing::{SWITCHES, host_facts, simulate_acquire};

fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| signal.to_string())
}

fn render_rules(out: &mut String, prefix: &str, rules: &SandboxRules) {
    for rule in rules.describe() {
        writeln!(out, "{prefix}may access: {rule}").unwrap();
    }
    writeln!(
        out,
        "{prefix}scopes: abstract-unix={} signal={}",
        rules.scope_abstract_unix, rules.scope_signal
    )
    .unwrap();
}

fn render_process(out: &mut String, process: &ProcessPlan) {
    let ProcessPlan {
        role,
        name,
        binary,
        args,
        env,
        fds,
        stdio,
        own_process_group,
        death_signal,
        jail,
        lifetime,
    } = process;
    writeln!(out, "process {role:?}: {name}").unwrap();
    writeln!(out, "  argv:").unwrap();
    writeln!(out, "    {}", binary.display()).unwrap();
    for arg in args {
        writeln!(out, "    {}", arg.to_string_lossy()).unwrap();
    }
    let EnvPlan {
        pass,
        set,
        listen_fds,
    } = env;
    let set: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(
        out,
        "  env: only [{}] from vmspawn's, else [{}]",
        pass.join(" "),
        set.join(" ")
    )
    .unwrap();
    if !listen_fds.is_empty() {
        writeln!(
            out,
            "  socket activation: LISTEN_FDS={} LISTEN_FDNAMES={} LISTEN_PID=<its pid>",
            listen_fds.len(),
            listen_fds.join(":")
        )
        .unwrap();
    }
    let table: Vec<String> = fds
        .iter()
        .map(|f| format!("{}={:?}", f.number, f.name))
        .collect();
    writeln!(out, "  fds: [{}]", table.join(" ")).unwrap();
    writeln!(
        out,
        "  stdio: {stdio:?}; own process group {own_process_group}; on launcher death {}",
        signal_name(*death_signal)
    )
    .unwrap();
    match lifetime {
        Lifetime::Setup { fallback_args } => {
            writeln!(out, "  lifetime: setup step, runs to completion").unwrap();
            if let Some(fallback) = fallback_args {
                writeln!(
                    out,
                    "  on failure, once more as: {}",
                    plan::render_argv(binary, fallback)
                )
                .unwrap();
            }
        }
        Lifetime::Vm { readiness, stop } => {
            writeln!(out, "  lifetime: with the VM; ready when {readiness:?}").unwrap();
            match stop {
                Stop::PowerButton => writeln!(
                    out,
                    "  stop: ACPI power button, $VMSPAWN_SHUTDOWN_TIMEOUT_SEC, then SIGKILL"
                )
                .unwrap(),
                Stop::Signal { signal, grace } => writeln!(
                    out,
                    "  stop: {}, {} s, then SIGKILL",
                    signal_name(*signal),
                    grace.as_secs()
                )
                .unwrap(),
            }
        }
    }
    match jail {
        None => writeln!(out, "  unconfined").unwrap(),
        Some(Jail { landlock, seccomp }) => {
            let denied = seccomp.denied();
            let by_argument: Vec<&str> = denied
                .iter()
                .filter(|(_, _, rules)| !rules.is_empty())
                .map(|(name, _, _)| *name)
                .collect();
            writeln!(
                out,
                "  seccomp: table {}, {} calls denied ({} by argument: {}), clone3 ENOSYS",
                seccomp.name(),
                denied.len(),
                by_argument.len(),
                by_argument.join(" ")
            )
            .unwrap();
            render_rules(out, "  ", landlock);
        }
    }
}

fn render(header: &Header) -> String {
    let env_lookup = |name: &str| {
        header
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| OsString::from(v))
    };
    let args: Vec<OsString> = header.args.iter().map(OsString::from).collect();
    let config = match cli::parse(
        &args,
        &ParseEnv {
            cwd: Path::new("/home/user"),
            var: &env_lookup,
        },
    ) {
        Ok(Action::Run(c)) => c,
        Ok(other) => return format!("action: {other:?}\n"),
        Err(e) => return format!("error: {e}\n"),
    };
    let switches: Vec<&str> = header.facts.iter().map(String::as_str).collect();
    if let Some(unknown) = switches.iter().find(|s| !SWITCHES.contains(s)) {
        return format!("error: unknown facts switch '{unknown}'\n");
    }
    let mut facts = host_facts(&switches, &config);
    // $RUNTIME_DIRECTORY in the header's environment, as host::discover takes it.
    if let Some(dir) = vmspawn::host::managed_runtime_dir(&env_lookup) {
        facts.runtime_dir = dir;
        facts.runtime_dir_managed = true;
    }
    let needs = match plan::needs(&config, &facts) {
        Ok(n) => n,
        Err(e) => return format!("error: {e}\n"),
    };
    let acquired = match simulate_acquire(&needs, &switches) {
        Ok(a) => a,
        Err(e) => return format!("error: {e}\n"),
    };
    let plan = match plan::plan(&config, &facts, &acquired) {
        Ok(p) => p,
        Err(e) => return format!("error: {e}\n"),
    };
    // Destructured, so a new field of the plan cannot escape the golden files.
    let Plan {
        machine,
        runtime_dir,
        files,
        credentials_from_files,
        nvram,
        initrd_merge,
        grow_image,
        ephemeral_overlay,
        ephemeral_copy,
        state_dirs,
        sockets,
        processes,
        console,
        banner,
        quiet,
        ready_at_start,
        guest_notifications,
        vsock_cid,
        vsock_uds,
        launcher_jail,
        warnings,
        notes,
        registration,
        runtime_dir_managed,
        scope,
    } = &plan;
    let mut out = String::new();
    writeln!(out, "machine: {machine}").unwrap();
    writeln!(
        out,
        "runtime-dir: {}{}",
        runtime_dir.display(),
        if *runtime_dir_managed {
            " ($RUNTIME_DIRECTORY: used as is, only its contents removed)"
        } else {
            ""
        }
    )
    .unwrap();
    match scope {
        None => writeln!(out, "scope: none (--keep-unit)").unwrap(),
        Some(s) => {
            writeln!(
                out,
                "scope: {} in {} ({:?} manager, {}): {:?}, controller vmspawn",
                s.unit,
                s.slice,
                s.manager,
                if s.required {
                    "required"
                } else {
                    "if reachable"
                },
                s.description
            )
            .unwrap();
            for p in &s.properties {
                writeln!(out, "  property {}: {}", p.name, p.value).unwrap();
            }
        }
    }
    for process in processes {
        render_process(&mut out, process);
    }
    for file in files {
        writeln!(
            out,
            "file {}: {}",
            file.path.display(),
            String::from_utf8_lossy(&file.contents)
        )
        .unwrap();
    }
    for credential in credentials_from_files {
        writeln!(
            out,
            "file {}: credential {} from {} (before QEMU starts)",
            credential.path.display(),
            credential.id,
            credential.source.display()
        )
        .unwrap();
    }
    match nvram {
        Some(n) => writeln!(
            out,
            "nvram: {} -> {}{}",
            n.template.display(),
            n.path.display(),
            if n.persistent {
                " (persistent: copied only if missing, kept)"
            } else {
                ""
            }
        )
        .unwrap(),
        None => writeln!(out, "nvram: none (no UEFI firmware)").unwrap(),
    }
    if let Some((sources, dest)) = initrd_merge {
        let list: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
        writeln!(
            out,
            "initrd-merge: {} -> {}",
            list.join(" + "),
            dest.display()
        )
        .unwrap();
    }
    if let Some(grow) = grow_image {
        writeln!(out, "grow: {} to {} bytes", grow.path.display(), grow.size).unwrap();
    }
    if let Some(overlay) = ephemeral_overlay {
        let dirs: Vec<String> = overlay
            .dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        writeln!(
            out,
            "ephemeral overlay: qcow2 backed by {} ({}), at least {} bytes, unnamed in the first disk-backed of: {}",
            overlay.backing.display(),
            overlay.backing_format.as_qemu(),
            overlay.grow_to,
            dirs.join(" ")
        )
        .unwrap();
    }
    if let Some(copy) = ephemeral_copy {
        writeln!(
            out,
            "ephemeral copy: {} -> {} (made before anything starts, removed at exit)",
            copy.source.display(),
            copy.copy.display()
        )
        .unwrap();
        if let Some(rules) = launcher_jail {
            render_rules(&mut out, "cleanup ", &copy.cleanup_rules(rules));
        }
    }
    for dir in state_dirs {
        writeln!(
            out,
            "state-dir: {} ({}, {})",
            dir.path.display(),
            dir.what,
            if dir.persistent {
                "persistent"
            } else {
                "removed with the runtime directory"
            }
        )
        .unwrap();
    }
    for socket in sockets {
        writeln!(
            out,
            "socket: {:?} at {}",
            socket.name,
            socket.path.display()
        )
        .unwrap();
    }
    writeln!(out, "console: {console:?}").unwrap();
    for line in banner {
        writeln!(out, "banner: {line}").unwrap();
    }
    if *quiet {
        writeln!(out, "quiet").unwrap();
    }
    if let Some(r) = registration {
        writeln!(
            out,
            "register: {:?} via {:?}, required {}, allocate-unit {}, interactive-auth {}",
            r.request.machine,
            r.via,
            r.required,
            r.request.allocate_unit,
            r.request.interactive_auth
        )
        .unwrap();
        if let Some(cid) = r.request.vsock_cid {
            writeln!(out, "register: vsock cid {cid}").unwrap();
        }
        if let Some(dir) = &r.request.root_directory {
            writeln!(out, "register: root directory {}", dir.display()).unwrap();
        }
        if let Some((address, key)) = &r.request.ssh {
            writeln!(out, "register: ssh {address} with key {}", key.display()).unwrap();
        }
    }
    if *guest_notifications {
        writeln!(
            out,
            "guest notifications: READY=1, STATUS=, EXIT_STATUS= over vsock"
        )
        .unwrap();
    }
    if let Some(cid) = vsock_cid {
        writeln!(out, "vsock cid: {cid}").unwrap();
    }
    if let Some(uds) = vsock_uds {
        writeln!(out, "vsock host socket: {}", uds.display()).unwrap();
    }
    if *ready_at_start {
        writeln!(out, "ready-at-start").unwrap();
    }
    match launcher_jail {
        None => writeln!(out, "launcher unconfined").unwrap(),
        Some(rules) => render_rules(&mut out, "launcher ", rules),
    }
    for warning in warnings {
        writeln!(out, "warning: {warning}").unwrap();
    }
    for note in notes {
        writeln!(out, "note: {note}").unwrap();
    }
    out
}

#[derive(Default)]
struct Header {
    args: Vec<String>,
    facts: Vec<String>,
    env: Vec<(String, String)>,
}

/// The header is the leading `# key: value` lines; the rest is the expected plan.
fn split_case(text: &str) -> (Header, String, String) {
    let mut header = Header::default();
    let mut header_text = String::new();
    let mut body = String::new();
    let mut in_header = true;
    for line in text.lines() {
        if in_header && let Some(rest) = line.strip_prefix("# ") {
            header_text.push_str(line);
            header_text.push('\n');
            if let Some(args) = rest.strip_prefix("args:") {
                header.args = split_words(args).expect("bad args line");
            } else if let Some(facts) = rest.strip_prefix("facts:") {
                header.facts = facts.split_whitespace().map(str::to_string).collect();
            } else if let Some(env) = rest.strip_prefix("env:") {
                let (k, v) = env
                    .trim()
                    .split_once('=')
                    .expect("env line needs NAME=VALUE");
                header.env.push((k.to_string(), v.to_string()));
            }
            continue;
        }
        in_header = false;
        body.push_str(line);
        body.push('\n');
    }
    (header, header_text, body)
}

#[test]
fn golden_plans() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 20,
        "expected the golden cases in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let (header, header_text, expected) = split_case(&text);
        let actual = render(&header);
        if update {
            std::fs::write(&path, format!("{header_text}{actual}")).unwrap();
        } else if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}
