#![deny(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use vmspawn::acquire;
use vmspawn::cli::{self, Action, ParseEnv};
use vmspawn::config::Config;
use vmspawn::error::{Error, Result};
use vmspawn::host::{self, HostEnv};
use vmspawn::plan;
use vmspawn::process::Role;
use vmspawn::runner::{self, RunEnv};
use vmspawn::sandbox::{QemuSockets, SeccompTable};

/// How long a SIGTERM/SIGINT waits for the guest to power off before QEMU is stopped.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn debug_enabled() -> bool {
    var("SYSTEMD_LOG_LEVEL").is_some_and(|l| l == "debug" || l == "7")
}

fn shutdown_timeout() -> Result<Duration> {
    match var("VMSPAWN_SHUTDOWN_TIMEOUT_SEC") {
        None => Ok(DEFAULT_SHUTDOWN_TIMEOUT),
        Some(v) => v
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| {
                Error::new(format!(
                    "Invalid $VMSPAWN_SHUTDOWN_TIMEOUT_SEC: {}",
                    v.to_string_lossy()
                ))
            }),
    }
}

fn launch(mut config: Config) -> Result<i32> {
    let passed = vmspawn::activation::take(&var)?;
    let env = HostEnv {
        var: &var,
        is_root: nix::unistd::geteuid().is_root(),
        passed: &passed,
    };
    host::resolve_image(&mut config, &env)?;
    let facts = host::discover(&config, &env)?;
    let needs = plan::needs(&config, &facts)?;
    let (acquired, resources) = acquire::acquire(
        &needs,
        &acquire::Env {
            var: &var,
            is_root: env.is_root,
            net_admin: facts.net_admin,
        },
        passed,
    )?;
    let plan = plan::plan(&config, &facts, &acquired)?;
    if debug_enabled() {
        // "Executing:" is QEMU's line, as in systemd-vmspawn.
        for process in &plan.processes {
            let argv = plan::render_argv(&process.binary, &process.args);
            match process.role {
                Role::Qemu => eprintln!("Executing: {argv}"),
                _ => eprintln!("Starting {}: {argv}", process.name),
            }
        }
    }
    runner::run(
        &plan,
        &RunEnv {
            var: &var,
            shutdown_timeout: shutdown_timeout()?,
            debug: debug_enabled(),
        },
        resources,
    )
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let code = match cli::parse(
        &args,
        &ParseEnv {
            cwd: &cwd,
            var: &var,
        },
    ) {
        Ok(Action::Help(text)) => {
            print!("{text}");
            0
        }
        Ok(Action::Version) => {
            println!(
                "vmspawn {} ({})",
                env!("CARGO_PKG_VERSION"),
                cli::COMPAT_VERSION
            );
            println!(
                "Compatible with the systemd-vmspawn {} command line.",
                cli::COMPAT_VERSION
            );
            println!("{}", vmspawn::sandbox::landlock_summary());
            println!(
                "seccomp: QEMU deny-list of {} system calls over QEMU's -sandbox {}; swtpm deny-list of {}; launcher allow-list of {} system calls",
                SeccompTable::Qemu(QemuSockets {
                    inet: false,
                    unix: false
                })
                .denied()
                .len(),
                plan::QEMU_SANDBOX,
                SeccompTable::Swtpm.denied().len(),
                vmspawn::sandbox::launcher_allowed_syscalls().len()
            );
            0
        }
        Ok(Action::FirmwareList) => {
            let env = HostEnv {
                var: &var,
                is_root: nix::unistd::geteuid().is_root(),
                passed: &Default::default(),
            };
            for path in host::firmware_list(&env) {
                println!("{}", path.display());
            }
            0
        }
        Ok(Action::FirmwareFeaturesList) => {
            let env = HostEnv {
                var: &var,
                is_root: nix::unistd::geteuid().is_root(),
                passed: &Default::default(),
            };
            for feature in host::firmware_features(&env) {
                println!("{feature}");
            }
            0
        }
        Ok(Action::FirmwareDescribe { include, exclude }) => {
            let env = HostEnv {
                var: &var,
                is_root: nix::unistd::geteuid().is_root(),
                passed: &Default::default(),
            };
            match host::firmware_describe(&env, &include, &exclude) {
                Ok(json) => {
                    println!("{json}");
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            }
        }
        Ok(Action::Run(config)) => match launch(*config) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Err(e) => {
            eprintln!("{e}");
            1
        }
    };
    std::process::exit(code);
}
