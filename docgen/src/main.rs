//! Writes vmspawn's man page and its bash, zsh and fish completions, generated from the very
//! clap command the launcher parses with (`vmspawn::cli::command`), so neither can drift from
//! the parser. The man page's section on what differs from systemd-vmspawn is taken from the
//! README's, so there is one text to keep true.
//!
//! Usage: vmspawn-docgen README OUTDIR
//! Writes OUTDIR/vmspawn.1, OUTDIR/vmspawn.bash, OUTDIR/_vmspawn and OUTDIR/vmspawn.fish.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;
use roff::{Roff, bold, roman};

const DIFFERENCES_HEADING: &str = "## Differences from systemd-vmspawn";

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [readme, out] = args.as_slice() else {
        eprintln!("usage: vmspawn-docgen README OUTDIR");
        return ExitCode::from(2);
    };
    match generate(readme, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmspawn-docgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(readme: &Path, out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(readme)
        .map_err(|e| format!("cannot read {}: {e}", readme.display()))?;
    let differences = differences(&text)?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("vmspawn.1", &man_page(&differences)?)?;
    for (shell, name) in [
        (Shell::Bash, "vmspawn.bash"),
        (Shell::Zsh, "_vmspawn"),
        (Shell::Fish, "vmspawn.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut vmspawn::cli::command(), "vmspawn", &mut buf);
        write(name, &buf)?;
    }
    Ok(())
}

/// The README's differences section as a list of items (each a bullet, continuation lines
/// joined), with Markdown's `code` and **bold** kept as spans.
fn differences(readme: &str) -> Result<Vec<String>, String> {
    let start = readme
        .find(DIFFERENCES_HEADING)
        .ok_or_else(|| format!("the README has no '{DIFFERENCES_HEADING}' section"))?;
    let section = &readme[start..];
    let body = section.split_once('\n').map_or("", |(_, rest)| rest);
    let body = body.split("\n## ").next().unwrap_or(body);
    let mut items: Vec<String> = Vec::new();
    for line in body.lines() {
        if let Some(item) = line.strip_prefix("- ") {
            items.push(item.trim().to_string());
        } else if line.starts_with("  ")
            && let Some(last) = items.last_mut()
        {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    if items.is_empty() {
        return Err("the README's differences section has no items".into());
    }
    Ok(items)
}

/// Renders one Markdown line: `code` and **bold** in bold, everything else roman.
fn inline(text: &str) -> Vec<roff::Inline> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next_code = rest.find('`');
        let next_bold = rest.find("**");
        let (at, marker) = match (next_code, next_bold) {
            (Some(c), Some(b)) if b < c => (b, "**"),
            (Some(c), _) => (c, "`"),
            (None, Some(b)) => (b, "**"),
            (None, None) => {
                out.push(roman(rest));
                break;
            }
        };
        if at > 0 {
            out.push(roman(&rest[..at]));
        }
        let after = &rest[at + marker.len()..];
        match after.find(marker) {
            Some(end) => {
                out.push(bold(&after[..end]));
                rest = &after[end + marker.len()..];
            }
            None => {
                out.push(roman(&rest[at..]));
                break;
            }
        }
    }
    out
}

fn man_page(differences: &[String]) -> Result<Vec<u8>, String> {
    let cmd = vmspawn::cli::command();
    let man = clap_mangen::Man::new(cmd)
        .title("VMSPAWN")
        .section("1")
        .manual("vmspawn");
    let mut buf = Vec::new();
    let io = |e: std::io::Error| format!("cannot render the man page: {e}");
    man.render_title(&mut buf).map_err(io)?;
    man.render_name_section(&mut buf).map_err(io)?;
    man.render_synopsis_section(&mut buf).map_err(io)?;

    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "vmspawn boots an operating system image, a directory tree or a kernel in a QEMU \
         virtual machine, with the command line of systemd-vmspawn (systemd ",
    )]);
    roff.text([
        roman(vmspawn::cli::COMPAT_VERSION),
        roman(
            "). Regular users run it without root: QEMU and every process next to it (swtpm, \
             virtiofsd, vhost-device-vsock, systemd-journal-remote, ssh-keygen) run under \
             Landlock and seccomp rules computed for the VM, and what needs privilege (a TAP \
             device, /dev/kvm, registration with systemd-machined) comes from ",
        ),
        bold("vmspawn-privhelper"),
        roman("(8) after checking the administrator's policy, "),
        bold("vmspawn-policy.toml"),
        roman("(5)."),
    ]);
    roff.to_writer(&mut buf).map_err(io)?;

    man.render_options_section(&mut buf).map_err(io)?;

    let mut roff = Roff::new();
    roff.control("SH", ["DIFFERENCES FROM SYSTEMD-VMSPAWN"]);
    for item in differences {
        roff.control("IP", ["\\(bu", "2"]);
        roff.text(inline(item));
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 when the guest powered off cleanly; with vsock, the guest's own exit status when it \
         reports one; 1 when vmspawn, QEMU or a process next to it failed, or the VM had to be \
         stopped forcibly.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("systemd-vmspawn"),
        roman("(1), "),
        bold("vmspawn-privhelper"),
        roman("(8), "),
        bold("vmspawn-policy.toml"),
        roman("(5), "),
        bold("qemu-system-x86_64"),
        roman("(1), "),
        bold("machinectl"),
        roman("(1)"),
    ]);
    roff.to_writer(&mut buf).map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_the_readme_bullets() {
        let readme = "# x\n\n## Differences from systemd-vmspawn 259\n\n- one `a`\n  continued\n\
                      - two\n\n## Next\n- not this\n";
        assert_eq!(differences(readme).unwrap(), ["one `a` continued", "two"]);
        assert!(differences("# nothing").is_err());
    }

    #[test]
    fn markdown_spans_become_bold() {
        let rendered = {
            let mut r = Roff::new();
            r.text(inline("use `--tpm=no` or **not**, `x"));
            r.to_roff()
        };
        assert!(rendered.contains("\\fB\\-\\-tpm=no\\fR"), "{rendered}");
        assert!(rendered.contains("\\fBnot\\fR"), "{rendered}");
        assert!(rendered.contains("`x"), "{rendered}");
    }

    #[test]
    fn the_real_readme_gives_a_page_with_every_option() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let page = String::from_utf8(man_page(&differences(&readme).unwrap()).unwrap()).unwrap();
        for arg in vmspawn::cli::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    page.contains(&escaped),
                    "--{long} missing from the man page"
                );
            }
        }
        assert!(
            page.contains(".SH \"DIFFERENCES FROM SYSTEMD-VMSPAWN\""),
            "{page}"
        );
    }
}
