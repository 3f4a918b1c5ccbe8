//! `--console=gui`: the VM's display in a QEMU GTK window on the user's Wayland or X11 display.
//!
//! `discover` (host side, does I/O) finds the display server's socket and the X authority
//! file, and asks this QEMU (`-display help`, `-device help`, `-chardev help`) whether it has
//! the GTK display and every device the gui plan uses, naming the package to install when one
//! is missing. The rest is pure planning: QEMU's arguments, the display part of its Landlock
//! domain and its environment.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::sandbox::SandboxRules;

/// The display server QEMU's window opens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisplayServer {
    /// `$WAYLAND_DISPLAY`, resolved to the compositor's socket (absolute path).
    Wayland { socket: PathBuf },
    /// `$DISPLAY` (a local display, `:N`): its socket `/tmp/.X11-unix/XN` and the X authority
    /// file, when there is one.
    X11 {
        display: String,
        socket: PathBuf,
        xauthority: Option<PathBuf>,
        /// The X server also listens on the abstract socket `@/tmp/.X11-unix/XN`. libxcb tries
        /// that one first and falls back to the path socket only when it does not exist, not
        /// when Landlock refuses it (EPERM): QEMU's abstract Unix sockets then stay unscoped.
        abstract_socket: bool,
    },
}

/// The guest agent channel (clipboard) this QEMU can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentChannel {
    /// QEMU's built-in `qemu-vdagent` chardev (as 262), with the clipboard on.
    QemuVdagent,
    /// `spicevmc` (as 259), where QEMU has SPICE but no qemu-vdagent.
    Spicevmc,
}

/// What `--console=gui` found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayFacts {
    pub server: DisplayServer,
    /// None: this QEMU has neither agent chardev; the VM runs without the channel.
    pub agent: Option<AgentChannel>,
    /// `$QEMU_MODULE_DIR`, when set: QEMU looks for its modules there first.
    pub module_dir: Option<PathBuf>,
}

/// Data GTK, GDK, fontconfig and Mesa read (found by tracing QEMU's GTK display under Xvfb and
/// Weston), and xkbcommon's keyboard descriptions (GDK's Wayland backend compiles the keymap);
/// shared libraries and their plug-ins (gio, gdk-pixbuf loaders, gconv) are under the library
/// directories QEMU may already read and execute.
pub const DISPLAY_DATA: [&str; 12] = [
    "/etc/fonts",
    "/usr/share/fontconfig",
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/var/cache/fontconfig",
    "/usr/share/icons",
    "/usr/share/pixmaps",
    "/usr/share/mime",
    "/usr/share/locale",
    // Debian's /usr/share/locale/locale.alias is a link to it.
    "/etc/locale.alias",
    "/usr/share/drirc.d",
    "/usr/share/X11/xkb",
];

/// The private directory (in the runtime directory) that is QEMU's `$HOME`, with
/// fontconfig's cache in its `cache/`.
pub fn home_dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("gui")
}

/// The devices the gui plan adds to the VM on this architecture.
fn devices(arch: &str) -> Vec<&'static str> {
    let mut devices = vec!["virtio-vga", "virtio-serial-pci", "virtserialport"];
    if !has_ps2_keyboard(arch) {
        devices.extend(["qemu-xhci", "usb-kbd"]);
    }
    devices
}

/// PC machines (q35, pc) have an i8042 PS/2 keyboard that every guest kernel drives. 262 also
/// adds a USB keyboard there, but QEMU then sends every key press to it, so a guest without
/// USB HID support (the Debian cloud kernel has no USB at all) gets no keyboard input.
fn has_ps2_keyboard(arch: &str) -> bool {
    matches!(arch, "x86_64" | "i386")
}

/// QEMU's arguments for the gui console.
pub fn qemu_args(machine: &str, display: &DisplayFacts, arch: &str) -> Vec<OsString> {
    let mut args: Vec<String> = vec![
        // The window title is "QEMU (<machine>)".
        "-name".into(),
        format!("guest={machine}"),
        "-display".into(),
        "gtk".into(),
        "-vga".into(),
        "virtio".into(),
    ];
    if let Some(agent) = display.agent {
        args.extend([
            "-device".into(),
            "virtio-serial".into(),
            "-chardev".into(),
            match agent {
                AgentChannel::QemuVdagent => "qemu-vdagent,id=vdagent,name=vdagent,clipboard=on",
                AgentChannel::Spicevmc => "spicevmc,id=vdagent,debug=0,name=vdagent",
            }
            .into(),
            "-device".into(),
            "virtserialport,chardev=vdagent,name=org.qemu.guest_agent.0".into(),
        ]);
    }
    if !has_ps2_keyboard(arch) {
        args.extend([
            "-device".into(),
            "qemu-xhci,id=xhci0".into(),
            "-device".into(),
            "usb-kbd,bus=xhci0.0".into(),
        ]);
    }
    args.into_iter().map(OsString::from).collect()
}

/// The display part of QEMU's Landlock domain: the display server's socket, the X authority
/// file, the data GTK and fontconfig read, and the module directory. Abstract Unix sockets stay
/// scoped (Wayland and X11 are reached through their path sockets), except for an X server that
/// also listens on its abstract socket (see `DisplayServer::X11`).
pub fn add_rules(rules: &mut SandboxRules, display: &DisplayFacts) {
    if let DisplayServer::X11 {
        abstract_socket: true,
        ..
    } = display.server
    {
        rules.scope_abstract_unix = false;
    }
    let add = |list: &mut Vec<PathBuf>, path: PathBuf| {
        if !list.contains(&path) {
            list.push(path);
        }
    };
    for data in DISPLAY_DATA {
        add(&mut rules.read, PathBuf::from(data));
    }
    match &display.server {
        DisplayServer::Wayland { socket } => add(&mut rules.read, socket.clone()),
        DisplayServer::X11 {
            socket, xauthority, ..
        } => {
            // (the abstract socket needs no rule)
            add(&mut rules.read, socket.clone());
            if let Some(xauthority) = xauthority {
                add(&mut rules.read, xauthority.clone());
            }
        }
    }
    if let Some(dir) = &display.module_dir {
        add(&mut rules.exec, dir.clone());
    }
}

/// QEMU's display environment, all set by vmspawn (nothing of the session passed as is):
/// which backend GDK uses and where the display is, a private `$HOME`, cache and runtime
/// directory in the VM's runtime directory, and no accessibility bus (a D-Bus connection QEMU
/// may not make).
pub fn env(display: &DisplayFacts, runtime_dir: &Path) -> Vec<(String, String)> {
    let home = home_dir(runtime_dir);
    let text = |p: &Path| p.display().to_string();
    let mut set = Vec::new();
    match &display.server {
        DisplayServer::Wayland { socket } => {
            set.push(("GDK_BACKEND".into(), "wayland".into()));
            set.push(("WAYLAND_DISPLAY".into(), text(socket)));
        }
        DisplayServer::X11 {
            display,
            xauthority,
            ..
        } => {
            set.push(("GDK_BACKEND".into(), "x11".into()));
            set.push(("DISPLAY".into(), display.clone()));
            if let Some(xauthority) = xauthority {
                set.push(("XAUTHORITY".into(), text(xauthority)));
            }
        }
    }
    set.push(("HOME".into(), text(&home)));
    set.push(("XDG_CACHE_HOME".into(), text(&home.join("cache"))));
    set.push(("XDG_CONFIG_HOME".into(), text(&home.join("config"))));
    set.push(("XDG_RUNTIME_DIR".into(), text(&home)));
    set.push(("NO_AT_BRIDGE".into(), "1".into()));
    if let Some(dir) = &display.module_dir {
        set.push(("QEMU_MODULE_DIR".into(), text(dir)));
    }
    set
}

/// Whether a process of this network namespace listens on the abstract Unix socket `@name`
/// (from /proc/net/unix, whose last column is the path, `@` for abstract names).
pub fn abstract_socket_exists(name: &str) -> bool {
    let wanted = format!("@{name}");
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|table| {
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(7) == Some(wanted.as_str()))
    })
}

/// The display server from the environment: Wayland first (as GTK), then X11. `exists`
/// looks at paths, `abstract_exists` at abstract socket names.
pub fn display_server(
    var: &dyn Fn(&str) -> Option<OsString>,
    exists: &dyn Fn(&Path) -> bool,
    abstract_exists: &dyn Fn(&str) -> bool,
) -> Result<DisplayServer> {
    let get = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(wayland) = get("WAYLAND_DISPLAY") {
        let socket = if Path::new(&wayland).is_absolute() {
            PathBuf::from(&wayland)
        } else {
            let runtime = get("XDG_RUNTIME_DIR").ok_or_else(|| {
                Error::new(format!(
                    "--console=gui: $WAYLAND_DISPLAY is '{}' but $XDG_RUNTIME_DIR, the directory of the \
                     Wayland socket, is not set. Run vmspawn in your desktop session.",
                    wayland.to_string_lossy()
                ))
            })?;
            PathBuf::from(runtime).join(&wayland)
        };
        if !exists(&socket) {
            return Err(Error::new(format!(
                "--console=gui: there is no Wayland socket at '{}' ($WAYLAND_DISPLAY). Run vmspawn in \
                 your desktop session.",
                socket.display()
            )));
        }
        return Ok(DisplayServer::Wayland { socket });
    }
    let Some(display) = get("DISPLAY") else {
        return Err(Error::new(
            "--console=gui needs a graphical session, but neither $WAYLAND_DISPLAY nor $DISPLAY is set. \
             Run vmspawn in your desktop session, or use --console=interactive.",
        ));
    };
    let display = display.to_string_lossy().into_owned();
    let number = x11_display_number(&display).ok_or_else(|| {
        Error::new(format!(
            "--console=gui: $DISPLAY is '{display}', which is not a local X11 display (':N'). QEMU runs \
             confined and reaches the display only through its socket in /tmp/.X11-unix (no TCP); \
             run vmspawn on the machine the display belongs to."
        ))
    })?;
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
    if !exists(&socket) {
        return Err(Error::new(format!(
            "--console=gui: $DISPLAY is '{display}' but there is no X11 socket '{}'. QEMU runs confined \
             and reaches the X server only through that socket (not an abstract socket or TCP).",
            socket.display()
        )));
    }
    let xauthority = get("XAUTHORITY")
        .map(PathBuf::from)
        .or_else(|| get("HOME").map(|home| PathBuf::from(home).join(".Xauthority")))
        .filter(|p| exists(p));
    let abstract_socket = abstract_exists(&socket.to_string_lossy());
    Ok(DisplayServer::X11 {
        display,
        socket,
        xauthority,
        abstract_socket,
    })
}

/// The number N of a local display `:N`, `:N.S`, `unix:N` or `unix:N.S`.
fn x11_display_number(display: &str) -> Option<u32> {
    let rest = display
        .strip_prefix("unix:")
        .or_else(|| display.strip_prefix(':'))?;
    let number = rest.split_once('.').map_or(rest, |(n, _)| n);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// What a QEMU binary says it has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QemuFeatures {
    pub displays: Vec<String>,
    pub devices: Vec<String>,
    pub chardevs: Vec<String>,
}

/// The display backends of `-display help` (one a line after the heading, up to a blank line).
pub fn parse_display_help(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Available display backend types"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// The device names (and aliases) of `-device help`: `name "virtio-vga", bus PCI`.
pub fn parse_device_help(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        for key in ["name \"", "alias \""] {
            if let Some(at) = line.find(key) {
                let rest = &line[at + key.len()..];
                if let Some(end) = rest.find('"') {
                    out.push(rest[..end].to_string());
                }
            }
        }
    }
    out
}

/// The chardev backends of `-chardev help` (one a line, indented, after the heading).
pub fn parse_chardev_help(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Available chardev backend types"))
        .skip(1)
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

/// The package (Debian/Ubuntu, then Fedora) that provides a display or device QEMU loads as a
/// module.
fn package_of(what: &str) -> &'static str {
    match what {
        "gtk" => {
            "qemu-system-gui on Debian and Ubuntu ('apt install qemu-system-gui', the module ui-gtk.so), \
             qemu-ui-gtk on Fedora"
        }
        "virtio-vga" => {
            "qemu-system-common on Debian and Ubuntu (the module hw-display-virtio-vga.so), \
             qemu-device-display-virtio-vga on Fedora"
        }
        "qemu-xhci" | "usb-kbd" => "the QEMU system package of your distribution (built with USB)",
        _ => "the QEMU system package of your distribution",
    }
}

/// Checks that QEMU has the GTK display and every device the gui plan uses; picks the agent
/// channel.
pub fn check_features(
    qemu: &Path,
    features: &QemuFeatures,
    arch: &str,
) -> Result<Option<AgentChannel>> {
    if !features.displays.iter().any(|d| d == "gtk") {
        return Err(Error::new(format!(
            "--console=gui: this QEMU ({}) has no GTK display ('-display help' does not list gtk), so it \
             cannot open a window. Install {}.",
            qemu.display(),
            package_of("gtk")
        )));
    }
    for device in devices(arch) {
        if !features.devices.iter().any(|d| d == device) {
            return Err(Error::new(format!(
                "--console=gui: this QEMU ({}) has no '{device}' device ('-device help' does not list it), \
                 which the graphical console uses. Install {}.",
                qemu.display(),
                package_of(device)
            )));
        }
    }
    let has = |c: &str| features.chardevs.iter().any(|x| x == c);
    Ok(if has("qemu-vdagent") {
        Some(AgentChannel::QemuVdagent)
    } else if has("spicevmc") {
        Some(AgentChannel::Spicevmc)
    } else {
        None
    })
}

/// Runs `qemu <option> help` with nothing of the session but `$QEMU_MODULE_DIR`.
fn qemu_help(qemu: &Path, option: &str, module_dir: Option<&OsStr>) -> Result<String> {
    let mut command = Command::new(qemu);
    command
        .args([option, "help"])
        .env_clear()
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = module_dir {
        command.env("QEMU_MODULE_DIR", dir);
    }
    let output = command.output().map_err(|e| {
        Error::io(
            format!("Failed to run '{} {option} help'", qemu.display()),
            e,
        )
    })?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Finds the display and checks QEMU for `--console=gui`.
pub fn discover(
    var: &dyn Fn(&str) -> Option<OsString>,
    qemu: &Path,
    arch: &str,
) -> Result<DisplayFacts> {
    let server = display_server(var, &|p: &Path| p.exists(), &abstract_socket_exists)?;
    let module_dir = var("QEMU_MODULE_DIR").filter(|v| !v.is_empty());
    let dir = module_dir.as_deref();
    let features = QemuFeatures {
        displays: parse_display_help(&qemu_help(qemu, "-display", dir)?),
        devices: parse_device_help(&qemu_help(qemu, "-device", dir)?),
        chardevs: parse_chardev_help(&qemu_help(qemu, "-chardev", dir)?),
    };
    let agent = check_features(qemu, &features, arch)?;
    Ok(DisplayFacts {
        server,
        agent,
        module_dir: module_dir.map(PathBuf::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISPLAY_HELP: &str = "Available display backend types:\nnone\ngtk\nsdl\negl-headless\ncurses\ndbus\n\n\
        Some display backends support suboptions, which can be set with\n";
    const DEVICE_HELP: &str = "Display devices:\nname \"virtio-vga\", bus PCI\n\
        name \"virtio-serial-pci\", bus PCI, alias \"virtio-serial\"\nname \"virtserialport\", bus virtio-serial-bus\n\
        name \"qemu-xhci\", bus PCI\nname \"usb-kbd\", bus usb-bus\n";
    const CHARDEV_HELP: &str =
        "Available chardev backend types: \n  stdio\n  ringbuf\n  qemu-vdagent\n  pty\n  socket\n";

    fn features() -> QemuFeatures {
        QemuFeatures {
            displays: parse_display_help(DISPLAY_HELP),
            devices: parse_device_help(DEVICE_HELP),
            chardevs: parse_chardev_help(CHARDEV_HELP),
        }
    }

    fn vars<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            list.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn parses_help_outputs() {
        let f = features();
        assert_eq!(
            f.displays,
            ["none", "gtk", "sdl", "egl-headless", "curses", "dbus"]
        );
        assert!(f.devices.iter().any(|d| d == "virtio-serial"));
        assert!(f.devices.iter().any(|d| d == "usb-kbd"));
        assert_eq!(
            f.chardevs,
            ["stdio", "ringbuf", "qemu-vdagent", "pty", "socket"]
        );
    }

    #[test]
    fn agent_channel_prefers_qemu_vdagent() {
        let qemu = Path::new("/usr/bin/qemu-system-x86_64");
        let mut f = features();
        assert_eq!(
            check_features(qemu, &f, "x86_64").unwrap(),
            Some(AgentChannel::QemuVdagent)
        );
        f.chardevs = vec!["spicevmc".into()];
        assert_eq!(
            check_features(qemu, &f, "x86_64").unwrap(),
            Some(AgentChannel::Spicevmc)
        );
        f.chardevs.clear();
        assert_eq!(check_features(qemu, &f, "x86_64").unwrap(), None);
    }

    #[test]
    fn missing_display_or_device_names_the_package() {
        let qemu = Path::new("/usr/bin/qemu-system-x86_64");
        let mut f = features();
        f.displays.retain(|d| d != "gtk");
        let e = check_features(qemu, &f, "x86_64").unwrap_err().to_string();
        assert!(e.contains("no GTK display"), "{e}");
        assert!(e.contains("apt install qemu-system-gui"), "{e}");
        let mut f = features();
        f.devices.retain(|d| d != "virtio-vga");
        let e = check_features(qemu, &f, "x86_64").unwrap_err().to_string();
        assert!(e.contains("'virtio-vga'"), "{e}");
        assert!(e.contains("qemu-system-common"), "{e}");
        // The USB keyboard is only needed where there is no PS/2 keyboard.
        let mut f = features();
        f.devices.retain(|d| d != "usb-kbd");
        assert!(check_features(qemu, &f, "x86_64").is_ok());
        let e = check_features(qemu, &f, "aarch64").unwrap_err().to_string();
        assert!(e.contains("'usb-kbd'"), "{e}");
    }

    #[test]
    fn display_server_from_the_environment() {
        let all = |_: &Path| true;
        let none = |_: &Path| false;
        let no_abstract = |_: &str| false;
        assert_eq!(
            display_server(
                &vars(&[
                    ("WAYLAND_DISPLAY", "wayland-0"),
                    ("XDG_RUNTIME_DIR", "/run/user/1000"),
                    ("DISPLAY", ":0")
                ]),
                &all,
                &no_abstract
            )
            .unwrap(),
            DisplayServer::Wayland {
                socket: "/run/user/1000/wayland-0".into()
            }
        );
        assert_eq!(
            display_server(
                &vars(&[("WAYLAND_DISPLAY", "/tmp/w.sock")]),
                &all,
                &no_abstract
            )
            .unwrap(),
            DisplayServer::Wayland {
                socket: "/tmp/w.sock".into()
            }
        );
        assert_eq!(
            display_server(
                &vars(&[("DISPLAY", ":7.0"), ("HOME", "/home/u")]),
                &all,
                &|name| name == "/tmp/.X11-unix/X7"
            )
            .unwrap(),
            DisplayServer::X11 {
                display: ":7.0".into(),
                socket: "/tmp/.X11-unix/X7".into(),
                xauthority: Some("/home/u/.Xauthority".into()),
                abstract_socket: true,
            }
        );
        let only_socket = |p: &Path| p == Path::new("/tmp/.X11-unix/X0");
        assert_eq!(
            display_server(
                &vars(&[("DISPLAY", "unix:0"), ("XAUTHORITY", "/x/auth")]),
                &only_socket,
                &no_abstract
            )
            .unwrap(),
            DisplayServer::X11 {
                display: "unix:0".into(),
                socket: "/tmp/.X11-unix/X0".into(),
                xauthority: None,
                abstract_socket: false,
            }
        );
        for (env, text) in [
            (&[][..], "neither $WAYLAND_DISPLAY nor $DISPLAY"),
            (&[("DISPLAY", "remote:0")][..], "not a local X11 display"),
            (
                &[("DISPLAY", ":0")][..],
                "no X11 socket '/tmp/.X11-unix/X0'",
            ),
            (&[("WAYLAND_DISPLAY", "wayland-0")][..], "$XDG_RUNTIME_DIR"),
            (
                &[("WAYLAND_DISPLAY", "wayland-0"), ("XDG_RUNTIME_DIR", "/r")][..],
                "no Wayland socket at '/r/wayland-0'",
            ),
        ] {
            let e = display_server(&vars(env), &none, &no_abstract)
                .unwrap_err()
                .to_string();
            assert!(e.contains(text), "{env:?}: {e}");
        }
    }

    #[test]
    fn wayland_plan_lists_the_socket_and_sets_the_backend() {
        let facts = DisplayFacts {
            server: DisplayServer::Wayland {
                socket: "/run/user/1000/wayland-0".into(),
            },
            agent: Some(AgentChannel::QemuVdagent),
            module_dir: Some("/opt/qemu/modules".into()),
        };
        let mut rules = SandboxRules::default();
        add_rules(&mut rules, &facts);
        assert!(
            rules
                .read
                .contains(&PathBuf::from("/run/user/1000/wayland-0"))
        );
        assert!(rules.read.contains(&PathBuf::from("/etc/fonts")));
        assert!(
            !rules
                .read
                .iter()
                .any(|p| p == Path::new("/usr") || p == Path::new("/etc"))
        );
        assert_eq!(rules.exec, [PathBuf::from("/opt/qemu/modules")]);
        let env = env(&facts, Path::new("/run/user/1000/systemd/vmspawn.x"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GDK_BACKEND"), Some("wayland"));
        assert_eq!(get("WAYLAND_DISPLAY"), Some("/run/user/1000/wayland-0"));
        assert_eq!(get("DISPLAY"), None);
        assert_eq!(
            get("XDG_CACHE_HOME"),
            Some("/run/user/1000/systemd/vmspawn.x/gui/cache")
        );
        assert_eq!(get("QEMU_MODULE_DIR"), Some("/opt/qemu/modules"));
    }

    #[test]
    fn abstract_x11_socket_unscopes_abstract_sockets() {
        let x11 = |abstract_socket| DisplayFacts {
            server: DisplayServer::X11 {
                display: ":0".into(),
                socket: "/tmp/.X11-unix/X0".into(),
                xauthority: None,
                abstract_socket,
            },
            agent: None,
            module_dir: None,
        };
        for (abstract_socket, scoped) in [(false, true), (true, false)] {
            let mut rules = SandboxRules {
                scope_abstract_unix: true,
                ..SandboxRules::default()
            };
            add_rules(&mut rules, &x11(abstract_socket));
            assert_eq!(rules.scope_abstract_unix, scoped);
            assert!(rules.read.contains(&PathBuf::from("/tmp/.X11-unix/X0")));
        }
    }

    #[test]
    fn display_numbers() {
        assert_eq!(x11_display_number(":0"), Some(0));
        assert_eq!(x11_display_number(":12.1"), Some(12));
        assert_eq!(x11_display_number("unix:3"), Some(3));
        assert_eq!(x11_display_number("host:0"), None);
        assert_eq!(x11_display_number(":"), None);
        assert_eq!(x11_display_number(":x"), None);
    }
}
