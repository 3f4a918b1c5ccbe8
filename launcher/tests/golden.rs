//! Golden tests of the planner: each file in tests/golden/ holds a command line (plus optional
//! host-fact and environment switches) and the complete plan it must produce. Regenerate after an
//! intended change with `UPDATE_GOLDEN=1 cargo test -p vmspawn --test golden`, then review the diff.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vmspawn::cli::{self, Action, ParseEnv};
use vmspawn::disk::{ImageFormat, RootKind, RootPartition};
use vmspawn::firmware::Firmware;
use vmspawn::parse::split_words;
use vmspawn::plan::{self, DriveInfo, HostFacts, ImageInfo};

fn host_facts(switches: &[&str], extra_drives: &[PathBuf]) -> HostFacts {
    let has = |s: &str| switches.contains(&s);
    let secure_boot = !has("plain-firmware");
    HostFacts {
        qemu_arch: if has("aarch64") {
            "aarch64".into()
        } else {
            "x86_64".into()
        },
        qemu_binary: PathBuf::from("/usr/bin/qemu-system-x86_64"),
        firmware: Firmware {
            descriptor: PathBuf::from("/usr/share/qemu/firmware/50-edk2-x86_64-secure.json"),
            code: PathBuf::from(if secure_boot {
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
            } else {
                "/usr/share/OVMF/OVMF_CODE_4M.fd"
            }),
            code_format: "raw".into(),
            vars_template: PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
            vars_format: "raw".into(),
            secure_boot,
        },
        kvm_usable: has("kvm"),
        kvm_fd_from_helper: has("kvm-from-helper"),
        tap: if has("tap-from-helper") {
            Some(plan::TapFacts::FromHelper {
                ifname: "vt-0123abcd".into(),
            })
        } else if has("tap-by-qemu") {
            Some(plan::TapFacts::QemuCreates {
                ifname: "vt-d".into(),
                mac: [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc],
            })
        } else {
            None
        },
        image: Some(ImageInfo {
            format: if has("qcow2") {
                ImageFormat::Qcow2
            } else {
                ImageFormat::Raw
            },
            is_block_device: has("block-image"),
            root_partition: if has("no-root-partition") {
                None
            } else if has("usr-partition") {
                Some(RootPartition {
                    kind: RootKind::Usr,
                    partuuid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                })
            } else {
                Some(RootPartition {
                    kind: RootKind::Root,
                    partuuid: "4f68bce3-0000-4000-8000-000000000001".into(),
                })
            },
        }),
        extra_drives: extra_drives
            .iter()
            .map(|p| DriveInfo {
                format: if p.extension().is_some_and(|e| e == "qcow2") {
                    ImageFormat::Qcow2
                } else {
                    ImageFormat::Raw
                },
                is_block_device: p.starts_with("/dev"),
            })
            .collect(),
        runtime_dir: PathBuf::from("/run/user/1000/systemd/vmspawn.0123456789abcdef"),
        hostname: "buildhost".into(),
        vmgenid: *b"\x11\x22\x33\x44\x55\x66\x47\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00",
        display_paths: vec![PathBuf::from("/home/user/.Xauthority")],
        registrar: if has("registrar-helper") {
            Some(vmspawn::register::Registrar::Helper)
        } else if has("registrar-user") {
            Some(vmspawn::register::Registrar::Varlink(PathBuf::from(
                "/run/user/1000/systemd/machine/io.systemd.Machine",
            )))
        } else {
            None
        },
        stdin_is_tty: has("tty"),
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
    let facts = host_facts(&switches, &config.extra_drives);
    let plan = match plan::plan(&config, &facts) {
        Ok(p) => p,
        Err(e) => return format!("error: {e}\n"),
    };
    let mut out = String::new();
    writeln!(out, "machine: {}", plan.machine).unwrap();
    writeln!(out, "argv:").unwrap();
    writeln!(out, "  {}", plan.qemu_binary.display()).unwrap();
    for arg in &plan.qemu_args {
        writeln!(out, "  {}", arg.to_string_lossy()).unwrap();
    }
    for file in &plan.files {
        writeln!(
            out,
            "file {}: {}",
            file.path.display(),
            String::from_utf8_lossy(&file.contents)
        )
        .unwrap();
    }
    writeln!(
        out,
        "nvram: {} -> {}",
        plan.nvram_copy.0.display(),
        plan.nvram_copy.1.display()
    )
    .unwrap();
    if let Some((sources, dest)) = &plan.initrd_merge {
        let list: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
        writeln!(
            out,
            "initrd-merge: {} -> {}",
            list.join(" + "),
            dest.display()
        )
        .unwrap();
    }
    if let Some(grow) = &plan.grow_image {
        writeln!(out, "grow: {} to {} bytes", grow.path.display(), grow.size).unwrap();
    }
    writeln!(out, "console: {:?}", plan.console).unwrap();
    for line in &plan.banner {
        writeln!(out, "banner: {line}").unwrap();
    }
    if let Some(r) = &plan.registration {
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
    }
    if plan.ready_at_start {
        writeln!(out, "ready-at-start").unwrap();
    }
    match &plan.confinement {
        None => writeln!(out, "unconfined").unwrap(),
        Some(c) => {
            for rule in c.qemu.describe() {
                writeln!(out, "qemu may access: {rule}").unwrap();
            }
            writeln!(
                out,
                "qemu scopes: abstract-unix={} signal={}",
                c.qemu.scope_abstract_unix, c.qemu.scope_signal
            )
            .unwrap();
            for rule in c.launcher.describe() {
                writeln!(out, "launcher may access: {rule}").unwrap();
            }
            for warning in &c.warnings {
                writeln!(out, "warning: {warning}").unwrap();
            }
        }
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
