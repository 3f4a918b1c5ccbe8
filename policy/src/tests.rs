use super::*;

const ORIGIN: &str = "/etc/vmspawn/policy.toml";

const FULL: &str = r#"# comment
[limits]
max-taps-per-user = 8
max-taps-total = 256

[[allow]]
users = ["alice", "bob"]
groups = ["vmusers"]
operations = ["create-tap", "open-kvm", "open-vhost-vsock", "register-machine"]
bridges = ["br0", "virbr1"]
max-taps = 4
vsock-cids = "10000-19999"
machine-prefix = "alice-"
polkit = "no"

[[deny]]
users = ["mallory"]
groups = []
operations = ["create-tap"]
bridges = ["br-admin"]
"#;

fn parse(text: &str) -> Policy {
    match Policy::parse(text, ORIGIN) {
        Ok(p) => p,
        Err(e) => panic!("policy should parse: {e}"),
    }
}

fn parse_err(text: &str) -> String {
    match Policy::parse(text, ORIGIN) {
        Ok(_) => panic!("policy should not parse:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn caller(user: &str, groups: &[&str]) -> Caller {
    Caller {
        uid: 1000,
        user: user.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn req(operation: Operation) -> Request<'static> {
    Request {
        operation,
        machine: None,
        bridge: None,
    }
}

fn tap(bridge: &str) -> Request<'_> {
    Request {
        operation: Operation::CreateTap,
        machine: None,
        bridge: Some(bridge),
    }
}

#[track_caller]
fn denied(policy: &Policy, caller: &Caller, req: &Request) -> String {
    match policy.check(caller, req) {
        Ok(g) => panic!("should be denied, got {g:?}"),
        Err(d) => d.message,
    }
}

#[track_caller]
fn granted(policy: &Policy, caller: &Caller, req: &Request) -> Grant {
    match policy.check(caller, req) {
        Ok(g) => g,
        Err(d) => panic!("should be allowed: {d}"),
    }
}

#[track_caller]
fn assert_has(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "{haystack:?} does not contain {needle:?}"
    );
}

// --- parsing ---------------------------------------------------------------

#[test]
fn parses_full_example() {
    let p = parse(FULL);
    assert_eq!(p.max_taps_total(), 256);
    assert_eq!(p.max_taps_per_user(), 8);
    assert_eq!(p.allow.len(), 1);
    assert_eq!(p.deny.len(), 1);
    let a = &p.allow[0];
    assert_eq!(a.line, 6);
    assert_eq!(a.who.users, ["alice", "bob"]);
    assert_eq!(a.who.groups, ["vmusers"]);
    assert_eq!(a.operations, Operation::ALL);
    assert_eq!(a.bridges, ["br0", "virbr1"]);
    assert_eq!(a.max_taps, 4);
    assert_eq!(a.vsock_cids, Some((10000, 19999)));
    assert_eq!(a.machine_prefix.as_deref(), Some("alice-"));
    assert!(!a.polkit);
    let d = &p.deny[0];
    assert_eq!(d.line, 16);
    assert_eq!(d.operations, [Operation::CreateTap]);
    assert_eq!(d.bridges.as_deref(), Some(&["br-admin".to_string()][..]));
}

#[test]
fn packaged_default_allows_nothing() {
    // The Debian package's /etc/vmspawn/policy.toml: the example with every rule commented out.
    let p = parse(include_str!("../../packaging/policy.toml"));
    assert!(p.allow.is_empty() && p.deny.is_empty());
    assert!(!p.allow_unconfined());
    for op in [
        Operation::CreateTap,
        Operation::OpenKvm,
        Operation::OpenVhostVsock,
        Operation::RegisterMachine,
    ] {
        denied(&p, &caller("root", &["root", "vmusers", "kvm"]), &req(op));
    }
}

#[test]
fn shipped_example_parses() {
    let text = include_str!("../policy.example.toml");
    let p = parse(text);
    assert_eq!(p.max_taps_total(), 256);
    assert_eq!(p.allow.len(), 2);
    assert_eq!(p.deny.len(), 2);
    let alice = caller("alice", &["alice"]);
    let g = granted(
        &p,
        &alice,
        &Request {
            operation: Operation::RegisterMachine,
            machine: Some("alice-vm"),
            bridge: None,
        },
    );
    assert!(!g.polkit);
    let bob = caller("bob", &["bob", "vmusers"]);
    let g = granted(&p, &bob, &tap("br0"));
    assert!(g.polkit);
    assert_eq!(g.max_taps, 4);
    denied(
        &p,
        &caller("mallory", &["vmusers"]),
        &req(Operation::OpenKvm),
    );
    denied(
        &p,
        &caller("eve", &["vmusers", "contractors"]),
        &tap("br-admin"),
    );
}

#[test]
fn defaults() {
    let p = parse("[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\n");
    assert_eq!(p.max_taps_total(), 256);
    assert_eq!(p.max_taps_per_user(), 8);
    let g = granted(&p, &caller("alice", &[]), &req(Operation::CreateTap));
    assert_eq!(g.max_taps, 8);
    assert_eq!(g.vsock_cids, None);
    assert!(g.polkit, "polkit defaults to yes");
}

#[test]
fn error_has_origin_and_line() {
    let e = Policy::parse(
        "\n\n[[allow]]\nusers = [\"a\"]\noperations = [\"x\"]\n",
        "p.toml",
    )
    .err()
    .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some(
            "p.toml:5: unknown operation 'x'; use create-tap, open-kvm, open-vhost-vsock or register-machine"
        )
    );
}

#[test]
fn parse_errors() {
    let rule = "[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\n";
    let vrule = "[[allow]]\nusers = [\"alice\"]\noperations = [\"open-vhost-vsock\"]\n";
    let cases: &[(&str, String, &str)] = &[
        // unknown key, in a rule and at top level and in [limits]
        (
            "unknown key",
            format!("{rule}colour = \"red\"\n"),
            ":4: unknown field `colour`",
        ),
        (
            "unknown table",
            "[allowed]\n".into(),
            ":1: unknown field `allowed`",
        ),
        (
            "unknown limit",
            "[limits]\nmax-vms = 3\n".into(),
            ":2: unknown field `max-vms`",
        ),
        // bad types
        (
            "users not list",
            "[[allow]]\nusers = \"alice\"\noperations = [\"open-kvm\"]\n".into(),
            ":2: invalid type",
        ),
        (
            "max-taps string",
            format!("{rule}max-taps = \"4\"\n"),
            ":4: invalid type",
        ),
        (
            "negative limit",
            "[limits]\nmax-taps-total = -1\n".into(),
            ":2:",
        ),
        (
            "polkit bool",
            format!("{rule}polkit = true\n"),
            ":4: invalid type",
        ),
        (
            "polkit word",
            format!("{rule}polkit = \"maybe\"\n"),
            ":4: polkit = 'maybe' is not valid",
        ),
        // TOML syntax and duplicate keys
        ("syntax", "[[allow]\n".into(), ":1:"),
        (
            "duplicate key",
            format!("{rule}operations = [\"open-kvm\"]\n"),
            ":4:",
        ),
        ("duplicate table", "[limits]\n[limits]\n".into(), ":2:"),
        // empty or missing operations
        (
            "empty operations",
            "[[allow]]\nusers = [\"alice\"]\noperations = []\n".into(),
            ":3: operations is empty",
        ),
        (
            "no operations",
            "\n[[allow]]\nusers = [\"alice\"]\n".into(),
            ":2: this [[allow]] rule has no operations",
        ),
        (
            "deny empty operations",
            "[[deny]]\nusers = [\"a\"]\noperations = []\n".into(),
            ":3: operations is empty",
        ),
        (
            "unknown operation",
            "[[allow]]\nusers = [\"a\"]\noperations = [\"reboot\"]\n".into(),
            ":3: unknown operation 'reboot'",
        ),
        (
            "duplicate operation",
            "[[allow]]\nusers = [\"a\"]\noperations = [\"open-kvm\",\n \"open-kvm\"]\n".into(),
            ":4: operations: 'open-kvm' is listed twice",
        ),
        // nobody named
        (
            "no users or groups",
            "[[allow]]\noperations = [\"open-kvm\"]\n".into(),
            ":1: this [[allow]] rule names nobody",
        ),
        (
            "empty users and groups",
            "\n[[deny]]\nusers = []\ngroups = []\n".into(),
            ":2: this [[deny]] rule names nobody",
        ),
        // CID ranges
        (
            "cid reversed",
            format!("{vrule}vsock-cids = \"20-10\"\n"),
            ":4: vsock-cids = '20-10' is not a CID range",
        ),
        (
            "cid reserved",
            format!("{vrule}vsock-cids = \"2-10\"\n"),
            ":4: vsock-cids",
        ),
        (
            "cid any",
            format!("{vrule}vsock-cids = \"3-4294967295\"\n"),
            ":4: vsock-cids",
        ),
        (
            "cid overflow",
            format!("{vrule}vsock-cids = \"3-99999999999\"\n"),
            ":4: vsock-cids",
        ),
        (
            "cid plus",
            format!("{vrule}vsock-cids = \"+3-10\"\n"),
            ":4: vsock-cids",
        ),
        (
            "cid single",
            format!("{vrule}vsock-cids = \"10\"\n"),
            ":4: vsock-cids",
        ),
        (
            "cid spaces",
            format!("{vrule}vsock-cids = \"3 - 10\"\n"),
            ":4: vsock-cids",
        ),
        // contradictions with operations
        (
            "cids without vsock",
            format!("{rule}vsock-cids = \"3-10\"\n"),
            ":4: vsock-cids is set but operations does not include open-vhost-vsock",
        ),
        (
            "vsock without cids",
            "[[allow]]\nusers = [\"a\"]\noperations = [\"open-vhost-vsock\"]\n".into(),
            ":1: this [[allow]] rule allows open-vhost-vsock but has no vsock-cids",
        ),
        (
            "bridges without tap",
            "[[allow]]\nusers = [\"a\"]\noperations = [\"open-kvm\"]\nbridges = [\"br0\"]\n".into(),
            ":4: bridges is set but operations does not include create-tap",
        ),
        (
            "max-taps without tap",
            "[[allow]]\nusers = [\"a\"]\noperations = [\"open-kvm\"]\nmax-taps = 1\n".into(),
            ":4: max-taps is set but operations does not include create-tap",
        ),
        (
            "deny bridges without tap",
            "[[deny]]\nusers = [\"a\"]\noperations = [\"open-kvm\"]\nbridges = [\"br0\"]\n".into(),
            ":4: bridges is set but operations does not include create-tap",
        ),
        (
            "deny empty bridges",
            "[[deny]]\nusers = [\"a\"]\nbridges = []\n".into(),
            ":3: bridges is empty",
        ),
        // limits
        (
            "max-taps too large",
            format!("{rule}max-taps = 9\n"),
            ":4: max-taps = 9 is out of range; use 1 to 8",
        ),
        (
            "max-taps too large for lowered limit",
            format!("[limits]\nmax-taps-per-user = 2\n{rule}max-taps = 3\n"),
            ":6: max-taps = 3 is out of range; use 1 to 2",
        ),
        (
            "max-taps zero",
            format!("{rule}max-taps = 0\n"),
            ":4: max-taps = 0",
        ),
        (
            "per-user zero",
            "[limits]\nmax-taps-per-user = 0\n".into(),
            ":2: max-taps-per-user = 0 is out of range; use 1 to 256",
        ),
        (
            "per-user too large",
            "[limits]\nmax-taps-per-user = 257\n".into(),
            ":2: max-taps-per-user = 257",
        ),
        (
            "total too large",
            "[limits]\nmax-taps-total = 4097\n".into(),
            ":2: max-taps-total = 4097 is out of range; use 1 to 4096",
        ),
        (
            "per-user above total",
            "[limits]\nmax-taps-total = 4\n".into(),
            ":1: max-taps-per-user (8) is more than max-taps-total (4)",
        ),
        // names in the file
        (
            "bad bridge chars",
            format!("{rule}bridges = [\"br 0\"]\n"),
            ":4: bridges: 'br 0' (4 bytes) is not a valid name",
        ),
        (
            "bridge dotdot",
            format!("{rule}bridges = [\"..\"]\n"),
            ":4: bridges: '..'",
        ),
        (
            "bridge slash",
            format!("{rule}bridges = [\"a/b\"]\n"),
            ":4: bridges: 'a/b'",
        ),
        (
            "bridge empty",
            format!("{rule}bridges = [\"\"]\n"),
            ":4: bridges: '' (0 bytes)",
        ),
        (
            "bridge 16 bytes",
            format!("{rule}bridges = [\n  \"br0\",\n  \"0123456789abcdef\",\n]\n"),
            ":6: bridges: '0123456789abcdef' (16 bytes) is not a valid name; use 1-15 bytes",
        ),
        (
            "bridge listed twice",
            format!("{rule}bridges = [\"br0\", \"br0\"]\n"),
            ":4: bridges: 'br0' is listed twice",
        ),
        (
            "user 33 bytes",
            format!(
                "[[allow]]\nusers = [\"{}\"]\noperations = [\"open-kvm\"]\n",
                "u".repeat(33)
            ),
            ":2: users: 'uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu' (33 bytes) is not a valid name; use 1-32 bytes",
        ),
        (
            "user 4096 bytes",
            format!(
                "[[allow]]\nusers = [\"{}\"]\noperations = [\"open-kvm\"]\n",
                "u".repeat(4096)
            ),
            ":2: users: 'uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu...' (4096 bytes)",
        ),
        (
            "group leading dash",
            "[[allow]]\ngroups = [\"-g\"]\noperations = [\"open-kvm\"]\n".into(),
            ":2: groups: '-g'",
        ),
        (
            "group control char",
            "[[allow]]\ngroups = [\"a\\nb\"]\noperations = [\"open-kvm\"]\n".into(),
            ":2: groups: 'a\\nb' (3 bytes)",
        ),
        (
            "machine prefix bad",
            format!("{rule}machine-prefix = \"../\"\n"),
            ":4: machine-prefix = '../' (3 bytes) is not valid",
        ),
        (
            "machine prefix empty",
            format!("{rule}machine-prefix = \"\"\n"),
            ":4: machine-prefix",
        ),
    ];
    for (what, text, want) in cases {
        let got = parse_err(text);
        assert!(
            got.starts_with(ORIGIN),
            "{what}: {got:?} does not name the file"
        );
        assert!(
            got.contains(want),
            "{what}: {got:?} does not contain {want:?}"
        );
    }
}

#[test]
fn rule_lines_follow_headers() {
    let text = "# header\n\n[[allow]]\nusers = [\"a\"]\noperations = [\"open-kvm\"]\n\n[[deny]]\nusers = [\"b\"]\n\n  [[ allow ]]  # indented, spaced\ngroups = [\"g\"]\noperations = [\"open-kvm\"]\n";
    let p = parse(text);
    let lines: Vec<usize> = p.allow.iter().map(|r| r.line).collect();
    assert_eq!(lines, [3, 10]);
    assert_eq!(p.deny[0].line, 7);
    let g = granted(&p, &caller("c", &["g"]), &req(Operation::OpenKvm));
    assert_eq!(g.rule, format!("{ORIGIN}:10 [[allow]]"));
}

// --- decisions -------------------------------------------------------------

#[test]
fn deny_by_default() {
    for text in ["", "# nothing\n", "[limits]\nmax-taps-total = 10\n"] {
        let p = parse(text);
        for op in Operation::ALL {
            let m = denied(&p, &caller("carol", &["carol", "users"]), &req(op));
            assert_eq!(
                m,
                format!(
                    "user 'carol' (groups: carol, users) has no [[allow]] rule for {} in {ORIGIN}; an administrator can add one",
                    op.name()
                )
            );
        }
    }
}

#[test]
fn allow_by_user() {
    let p = parse("[[allow]]\nusers = [\"alice\"]\noperations = [\"open-kvm\"]\npolkit = \"no\"\n");
    let g = granted(&p, &caller("alice", &["alice"]), &req(Operation::OpenKvm));
    assert_eq!(g.rule, format!("{ORIGIN}:1 [[allow]]"));
    assert!(!g.polkit);
    // Other operations and other users are not allowed.
    denied(&p, &caller("alice", &["alice"]), &req(Operation::CreateTap));
    denied(&p, &caller("bob", &["bob"]), &req(Operation::OpenKvm));
    // A user name is not a group name and vice versa.
    denied(&p, &caller("bob", &["alice"]), &req(Operation::OpenKvm));
    // Comparison is exact: no prefix or case folding.
    denied(&p, &caller("alice2", &[]), &req(Operation::OpenKvm));
    denied(&p, &caller("Alice", &[]), &req(Operation::OpenKvm));
}

#[test]
fn allow_by_group() {
    let p = parse(
        "[[allow]]\ngroups = [\"vmusers\"]\noperations = [\"open-kvm\", \"register-machine\"]\n",
    );
    granted(
        &p,
        &caller("bob", &["bob", "vmusers"]),
        &req(Operation::OpenKvm),
    );
    granted(
        &p,
        &caller("bob", &["vmusers"]),
        &req(Operation::RegisterMachine),
    );
    denied(
        &p,
        &caller("bob", &["bob", "users"]),
        &req(Operation::OpenKvm),
    );
    denied(&p, &caller("vmusers", &[]), &req(Operation::OpenKvm));
}

#[test]
fn deny_wins_over_allow() {
    let text = "[[allow]]\ngroups = [\"vmusers\"]\noperations = [\"create-tap\", \"open-kvm\"]\nbridges = [\"br0\", \"br-admin\"]\n\n[[deny]]\nusers = [\"mallory\"]\n\n[[deny]]\ngroups = [\"contractors\"]\noperations = [\"create-tap\"]\nbridges = [\"br-admin\"]\n";
    let p = parse(text);
    let mallory = caller("mallory", &["vmusers"]);
    assert_eq!(
        denied(&p, &mallory, &req(Operation::OpenKvm)),
        format!("denied by {ORIGIN}:6 [[deny]]")
    );
    denied(&p, &mallory, &tap("br0"));

    let eve = caller("eve", &["vmusers", "contractors"]);
    assert_eq!(
        denied(&p, &eve, &tap("br-admin")),
        format!("denied by {ORIGIN}:9 [[deny]]")
    );
    // The bridge-limited deny leaves other bridges, no bridge and other operations alone.
    granted(&p, &eve, &tap("br0"));
    granted(&p, &eve, &req(Operation::CreateTap));
    granted(&p, &eve, &req(Operation::OpenKvm));
    granted(&p, &caller("bob", &["vmusers"]), &tap("br-admin"));
}

#[test]
fn bridges() {
    let p = parse(
        "[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\", \"open-kvm\"]\nbridges = [\"br0\", \"virbr1\"]\n\n[[allow]]\nusers = [\"bob\"]\noperations = [\"create-tap\"]\n",
    );
    let alice = caller("alice", &[]);
    granted(&p, &alice, &tap("br0"));
    granted(&p, &alice, &tap("virbr1"));
    granted(&p, &alice, &req(Operation::CreateTap));
    assert_eq!(
        denied(&p, &alice, &tap("br9")),
        format!("bridge 'br9' is not in the bridges of {ORIGIN}:1")
    );
    // bob's rule has no bridges: TAPs without a bridge only.
    let bob = caller("bob", &[]);
    granted(&p, &bob, &req(Operation::CreateTap));
    assert_eq!(
        denied(&p, &bob, &tap("br0")),
        format!("bridge 'br0' is not in the bridges of {ORIGIN}:6")
    );
    // A bridge only goes with create-tap.
    let m = denied(
        &p,
        &alice,
        &Request {
            operation: Operation::OpenKvm,
            machine: None,
            bridge: Some("br0"),
        },
    );
    assert_has(&m, "only be given with create-tap");
    // Invalid names in requests are refused before any comparison.
    for bad in ["", ".", "..", "br 0", "br0/", "br0\n", "br0:1", "ßr0"] {
        let m = denied(&p, &alice, &tap(bad));
        assert_has(&m, "is not valid");
    }
}

#[test]
fn a_later_rule_can_allow_a_bridge() {
    let p = parse(
        "[[allow]]\ngroups = [\"vmusers\"]\noperations = [\"create-tap\"]\nbridges = [\"br0\"]\nmax-taps = 2\n\n[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\nbridges = [\"br1\"]\n",
    );
    let alice = caller("alice", &["vmusers"]);
    let g = granted(&p, &alice, &tap("br0"));
    assert_eq!((g.max_taps, g.rule), (2, format!("{ORIGIN}:1 [[allow]]")));
    let g = granted(&p, &alice, &tap("br1"));
    assert_eq!((g.max_taps, g.rule), (8, format!("{ORIGIN}:7 [[allow]]")));
}

/// CVE-2019-13164: qemu-bridge-helper truncated ACL names to IFNAMSIZ but
/// compared the full requested name, so a long name whose first 15 bytes were
/// an allowed bridge got through.
#[test]
fn overlong_bridge_names_never_match_a_15_byte_acl_entry() {
    let acl = "b".repeat(15);
    let text = format!(
        "[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\nbridges = [\"{acl}\"]\n"
    );
    let p = parse(&text);
    let alice = caller("alice", &[]);
    // The 15-byte name itself is allowed.
    granted(&p, &alice, &tap(&acl));
    for len in [16, 17, 4096] {
        let long = format!("{acl}{}", "b".repeat(len - 15));
        assert_eq!(long.len(), len);
        let m = denied(&p, &alice, &tap(&long));
        assert_has(&m, &format!("({len} bytes) is not valid"));
        assert!(
            m.len() < 200,
            "a long name is not echoed in full: {} bytes",
            m.len()
        );
        // Also with a different tail, as an attacker would pick it.
        let long = format!("{acl}{}", "x".repeat(len - 15));
        denied(&p, &alice, &tap(&long));
    }
    // The same names in the file are errors, not truncated.
    for len in [16, 17, 4096] {
        let text = format!(
            "[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\nbridges = [\"{}\"]\n",
            "b".repeat(len)
        );
        let e = parse_err(&text);
        assert_has(&e, ":4: bridges: ");
        assert_has(&e, &format!("({len} bytes) is not a valid name"));
    }
    // A deny entry of 15 bytes still denies the 15-byte name, and longer names stay refused.
    let text = format!("{text}\n[[deny]]\nusers = [\"alice\"]\nbridges = [\"{acl}\"]\n");
    let p = parse(&text);
    assert_eq!(
        denied(&p, &alice, &tap(&acl)),
        format!("denied by {ORIGIN}:6 [[deny]]")
    );
}

#[test]
fn overlong_caller_names() {
    let p = parse("[[allow]]\ngroups = [\"vmusers\"]\noperations = [\"open-kvm\"]\n");
    let long_user = "a".repeat(4096);
    let m = denied(
        &p,
        &caller(&long_user, &["vmusers"]),
        &req(Operation::OpenKvm),
    );
    assert_has(&m, "(4096 bytes) is not a name");
    // An overlong or odd group is ignored, not truncated.
    let long_group = format!("vmusers{}", "x".repeat(30));
    let m = denied(
        &p,
        &caller("bob", &[&long_group, "bad\u{1b}[2J"]),
        &req(Operation::OpenKvm),
    );
    assert_has(&m, "has no [[allow]] rule for open-kvm");
    assert!(
        !m.contains('\u{1b}'),
        "control characters are escaped: {m:?}"
    );
    granted(
        &p,
        &caller("bob", &[&long_group, "vmusers"]),
        &req(Operation::OpenKvm),
    );
}

#[test]
fn machine_prefix() {
    let p = parse(
        "[[allow]]\nusers = [\"alice\"]\noperations = [\"register-machine\", \"open-kvm\"]\nmachine-prefix = \"alice-\"\n",
    );
    let alice = caller("alice", &[]);
    let named = |machine| Request {
        operation: Operation::RegisterMachine,
        machine: Some(machine),
        bridge: None,
    };
    granted(&p, &alice, &named("alice-vm"));
    granted(&p, &alice, &named("alice-"));
    assert_eq!(
        denied(&p, &alice, &named("bob-vm")),
        format!("machine name 'bob-vm' does not start with 'alice-' as {ORIGIN}:1 requires")
    );
    denied(&p, &alice, &named("alice"));
    assert_has(
        &denied(&p, &alice, &req(Operation::OpenKvm)),
        "requires a machine name starting with 'alice-'",
    );
    // Invalid and overlong machine names are refused before the prefix check.
    assert_has(&denied(&p, &alice, &named("alice-/../x")), "is not valid");
    let long = format!("alice-{}", "v".repeat(59));
    assert_has(
        &denied(&p, &alice, &named(&long)),
        "(65 bytes) is not valid",
    );
    granted(&p, &alice, &named(&long[..64]));
}

#[test]
fn grant_values() {
    let text = "[limits]\nmax-taps-per-user = 6\nmax-taps-total = 100\n\n[[allow]]\ngroups = [\"vmusers\"]\noperations = [\"create-tap\", \"open-vhost-vsock\"]\nmax-taps = 3\nvsock-cids = \"3-4294967294\"\npolkit = \"yes\"\n\n[[allow]]\nusers = [\"alice\"]\noperations = [\"open-vhost-vsock\"]\nvsock-cids = \"10000-10000\"\npolkit = \"no\"\n";
    let p = parse(text);
    assert_eq!(p.max_taps_total(), 100);
    let bob = caller("bob", &["vmusers"]);
    assert_eq!(
        granted(&p, &bob, &req(Operation::CreateTap)),
        Grant {
            max_taps: 3,
            vsock_cids: Some((3, 4_294_967_294)),
            polkit: true,
            rule: format!("{ORIGIN}:5 [[allow]]"),
        }
    );
    assert_eq!(
        granted(&p, &caller("alice", &[]), &req(Operation::OpenVhostVsock)),
        Grant {
            max_taps: 6,
            vsock_cids: Some((10000, 10000)),
            polkit: false,
            rule: format!("{ORIGIN}:12 [[allow]]"),
        }
    );
}

#[test]
fn operation_names_round_trip() {
    for op in Operation::ALL {
        assert_eq!(Operation::from_name(op.name()), Some(op));
        assert_eq!(op.to_string(), op.name());
    }
    assert_eq!(Operation::from_name("Create-Tap"), None);
}

// --- loading ---------------------------------------------------------------

mod load {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::{PermissionsExt, symlink};

    const GOOD: &str = "[[allow]]\nusers = [\"alice\"]\noperations = [\"open-kvm\"]\n";

    fn me() -> u32 {
        match fs::metadata("/proc/self") {
            Ok(m) => m.uid(),
            Err(e) => panic!("cannot stat /proc/self: {e}"),
        }
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        path
    }

    fn load_err(path: &Path, owner: u32) -> PolicyError {
        match load_with_owner(path, owner) {
            Ok(_) => panic!("{} should be refused", path.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn loads_a_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "policy.toml", GOOD, 0o644);
        let p = match load_with_owner(&path, me()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let g = granted(&p, &caller("alice", &[]), &req(Operation::OpenKvm));
        assert_eq!(g.rule, format!("{}:1 [[allow]]", path.display()));
        // Read-only for the owner is fine too.
        fs::set_permissions(&path, Permissions::from_mode(0o400)).unwrap();
        assert!(load_with_owner(&path, me()).is_ok());
    }

    #[test]
    fn refuses_world_and_group_writable() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "policy.toml", GOOD, 0o646);
        let e = load_err(&path, me());
        assert!(
            matches!(
                e,
                PolicyError::Unsafe {
                    problem: UnsafeFile::WorldWritable,
                    ..
                }
            ),
            "{e:?}"
        );
        let m = e.to_string();
        assert_has(&m, &path.display().to_string());
        assert_has(&m, "world-writable");
        assert_has(&m, &format!("chmod o-w {}", path.display()));

        fs::set_permissions(&path, Permissions::from_mode(0o664)).unwrap();
        let e = load_err(&path, me());
        assert!(
            matches!(
                e,
                PolicyError::Unsafe {
                    problem: UnsafeFile::GroupWritable,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_has(&e.to_string(), "group-writable");
    }

    #[test]
    fn refuses_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = write(dir.path(), "real.toml", GOOD, 0o644);
        let link = dir.path().join("policy.toml");
        symlink(&target, &link).unwrap();
        let e = load_err(&link, me());
        assert!(
            matches!(
                e,
                PolicyError::Unsafe {
                    problem: UnsafeFile::Symlink,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_has(&e.to_string(), "symbolic link");
        // A dangling symlink is refused as a symlink, not reported missing.
        fs::remove_file(&target).unwrap();
        let e = load_err(&link, me());
        assert!(
            matches!(
                e,
                PolicyError::Unsafe {
                    problem: UnsafeFile::Symlink,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn refuses_wrong_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "policy.toml", GOOD, 0o644);
        let other = me().wrapping_add(1);
        let e = load_err(&path, other);
        assert!(
            matches!(
                e,
                PolicyError::Unsafe {
                    problem: UnsafeFile::NotOwnedBy { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert_has(
            &e.to_string(),
            &format!("owned by uid {}, not uid {other}", me()),
        );
        // Policy::load wants root: as anyone else, our own file is refused.
        if me() != 0 {
            let e = Policy::load(&path)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_has(&e, "not uid 0");
        }
    }

    #[test]
    fn refuses_directory_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        let e = load_err(dir.path(), me());
        assert!(
            matches!(
                e,
                PolicyError::Unsafe {
                    problem: UnsafeFile::NotRegularFile,
                    ..
                }
            ),
            "{e:?}"
        );

        let missing = dir.path().join("policy.toml");
        let e = load_err(&missing, me());
        assert!(matches!(e, PolicyError::Missing { .. }), "{e:?}");
        let m = e.to_string();
        assert_has(&m, &missing.display().to_string());
        assert_has(&m, "does not exist; create it");
    }

    #[test]
    fn refuses_large_and_non_utf8_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = "#".repeat(MAX_FILE_SIZE as usize + 1);
        let path = write(dir.path(), "big.toml", &big, 0o644);
        let e = load_err(&path, me());
        assert!(
            matches!(
                e,
                PolicyError::Unsafe {
                    problem: UnsafeFile::TooLarge { .. },
                    ..
                }
            ),
            "{e:?}"
        );

        let path = dir.path().join("latin1.toml");
        fs::write(&path, b"# caf\xe9\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let e = load_err(&path, me());
        assert_has(&e.to_string(), "not UTF-8");
    }

    #[test]
    fn parse_errors_name_the_loaded_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "policy.toml",
            "[[allow]]\nusers = [\"a\"]\nfoo = 1\n",
            0o644,
        );
        let e = load_err(&path, me()).to_string();
        assert!(
            e.starts_with(&format!("{}:3: unknown field `foo`", path.display())),
            "{e}"
        );
    }
}

#[test]
fn allow_unconfined_key() {
    let rule = "[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\n";
    assert!(!parse(rule).allow_unconfined(), "off by default");
    assert!(!parse(&format!("[limits]\nmax-taps-total = 9\n{rule}")).allow_unconfined());
    assert!(parse(&format!("[limits]\nallow-unconfined = true\n{rule}")).allow_unconfined());
    assert!(!parse(&format!("[limits]\nallow-unconfined = false\n{rule}")).allow_unconfined());
    // A string or a number is not a yes; misspellings and other places are unknown keys.
    for (text, expected) in [
        ("[limits]\nallow-unconfined = \"yes\"\n", ":2: invalid type"),
        ("[limits]\nallow-unconfined = 1\n", ":2: invalid type"),
        (
            "[limits]\nallow_unconfined = true\n",
            ":2: unknown field `allow_unconfined`",
        ),
        (
            "[limits]\nallow-unconfinded = true\n",
            ":2: unknown field `allow-unconfinded`",
        ),
        (
            "allow-unconfined = true\n",
            ":1: unknown field `allow-unconfined`",
        ),
        (
            "[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\nallow-unconfined = true\n",
            ":4: unknown field `allow-unconfined`",
        ),
    ] {
        assert_has(&parse_err(text), expected);
    }
}

#[test]
fn unresolved_groups_never_fail_open() {
    let p = parse(
        "[[allow]]\nusers = [\"alice\", \"bob\"]\noperations = [\"create-tap\", \"open-kvm\"]\npolkit = \"no\"\n\
         [[allow]]\ngroups = [\"vmusers\"]\noperations = [\"register-machine\"]\npolkit = \"no\"\n\
         [[deny]]\ngroups = [\"contractors\"]\noperations = [\"create-tap\"]\n",
    );
    let alice = caller("alice", &[]);
    let why = Some("NSS source 'ldap' cannot be checked");
    let check = |c: &Caller, r: &Request, why: Option<&str>| p.check_with(c, r, why);
    // Complete: the deny by group does not name alice, so she gets her TAP.
    assert!(check(&alice, &req(Operation::CreateTap), None).is_ok());
    // Incomplete: she might be in 'contractors'; the deny by group denies.
    let e = check(&alice, &req(Operation::CreateTap), why).unwrap_err();
    assert_has(
        &e.message,
        "could not be resolved completely (NSS source 'ldap'",
    );
    assert_has(&e.message, ":9 [[deny]] names groups");
    // The same with the groups she was found in: they may not be all of them.
    let found = caller("alice", &["vmusers"]);
    assert!(check(&found, &req(Operation::CreateTap), why).is_err());
    // An allow rule by group denies too (register-machine is only allowed by group).
    let e = check(&found, &req(Operation::RegisterMachine), why).unwrap_err();
    assert_has(&e.message, ":5 [[allow]] names groups");
    assert!(check(&found, &req(Operation::RegisterMachine), None).is_ok());
    // Rules by user name alone still decide: open-kvm has no rule naming groups.
    assert!(check(&alice, &req(Operation::OpenKvm), why).is_ok());
    assert!(check(&caller("eve", &[]), &req(Operation::OpenKvm), why).is_err());
    // A deny by group for other bridges does not concern a request without one.
    let b = parse(
        "[[allow]]\nusers = [\"alice\"]\noperations = [\"create-tap\"]\nbridges = [\"br0\"]\n\
         [[deny]]\ngroups = [\"g\"]\nbridges = [\"br1\"]\n",
    );
    assert!(
        b.check_with(&alice, &req(Operation::CreateTap), why)
            .is_ok()
    );
    assert!(b.check_with(&alice, &tap("br1"), why).is_err());
    assert!(b.check_with(&alice, &tap("br0"), why).is_ok());
    // check() is check_with(.., None).
    assert_eq!(
        p.check(&alice, &req(Operation::CreateTap)),
        check(&alice, &req(Operation::CreateTap), None)
    );
}
