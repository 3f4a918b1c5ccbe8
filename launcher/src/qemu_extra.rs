//! The files that QEMU options in `$SYSTEMD_VMSPAWN_QEMU_EXTRA` name, so that QEMU's Landlock
//! domain can allow exactly those. Front ends pass their own drives this way (mkosi's
//! `Drives=` becomes `-blockdev driver=raw,node-name=…,file.driver=file,file.filename=PATH,…`,
//! and `QemuArgs=` may add `-drive file=PATH,…`). Pure: only the words are looked at.

use std::path::PathBuf;

/// A file a QEMU option opens, and whether the option opens it read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraFile {
    pub path: PathBuf,
    pub read_only: bool,
}

/// QEMU's `key=value,key=value` option syntax, where `,,` is a literal comma. A word without
/// `=` gets an empty value.
pub fn split_opts(text: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                parts.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p, String::new()),
        })
        .collect()
}

fn is_true(value: &str) -> bool {
    matches!(value, "on" | "yes" | "true" | "y")
}

fn file(path: &str, read_only: bool) -> Option<ExtraFile> {
    // Relative names are resolved by QEMU against its working directory; only absolute
    // ones can be granted (the others stay in the "uncovered" warning).
    path.starts_with('/').then(|| ExtraFile {
        path: PathBuf::from(path),
        read_only,
    })
}

/// `-drive`: `file=` (or `file.filename=`); read-only with `readonly=on` or `media=cdrom`.
fn drive_files(value: &str, out: &mut Vec<ExtraFile>) {
    let opts = split_opts(value);
    let read_only = opts.iter().any(|(k, v)| {
        (k == "readonly" || k == "read-only") && is_true(v) || k == "media" && v == "cdrom"
    });
    for (key, path) in &opts {
        if key == "file" || key == "file.filename" {
            out.extend(file(path, read_only));
        }
    }
}

/// `-blockdev`, in the dotted syntax (`filename=`, `file.filename=`, …) or as JSON; read-only
/// with `read-only=on` on the node or on the file's own node.
fn blockdev_files(value: &str, out: &mut Vec<ExtraFile>) {
    if value.trim_start().starts_with('{') {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(value) {
            json_files(&json, false, out);
        }
        return;
    }
    let opts = split_opts(value);
    let flag = |key: &str| opts.iter().any(|(k, v)| k == key && is_true(v));
    for (key, path) in &opts {
        let prefix = if key == "filename" {
            Some("")
        } else {
            key.strip_suffix(".filename")
        };
        let Some(prefix) = prefix else { continue };
        // read-only=on on the top node covers its children; a child's own flag covers it.
        let mut read_only = flag("read-only");
        let mut node = prefix;
        while !node.is_empty() {
            read_only |= flag(&format!("{node}.read-only"));
            node = node.rsplit_once('.').map_or("", |(parent, _)| parent);
        }
        out.extend(file(path, read_only));
    }
}

fn json_files(value: &serde_json::Value, inherited_ro: bool, out: &mut Vec<ExtraFile>) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    let read_only = inherited_ro || map.get("read-only") == Some(&serde_json::Value::Bool(true));
    if let Some(serde_json::Value::String(path)) = map.get("filename") {
        out.extend(file(path, read_only));
    }
    for child in map.values() {
        json_files(child, read_only, out);
    }
}

/// Every file the QEMU options in `args` name, in order, each once (read-write wins when a
/// file is named both ways).
pub fn files(args: &[String]) -> Vec<ExtraFile> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let Some(option) = args[i].strip_prefix('-') else {
            i += 1;
            continue;
        };
        let option = option.strip_prefix('-').unwrap_or(option);
        let Some(value) = args.get(i + 1) else { break };
        match option {
            "drive" => drive_files(value, &mut found),
            "blockdev" => blockdev_files(value, &mut found),
            "cdrom" => found.extend(file(value, true)),
            "hda" | "hdb" | "hdc" | "hdd" | "fda" | "fdb" | "mtdblock" | "sd" | "pflash" => {
                found.extend(file(value, false))
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let mut out: Vec<ExtraFile> = Vec::new();
    for f in found {
        match out.iter_mut().find(|o| o.path == f.path) {
            Some(existing) => existing.read_only &= f.read_only,
            None => out.push(f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn rw(p: &str) -> ExtraFile {
        ExtraFile {
            path: p.into(),
            read_only: false,
        }
    }

    fn ro(p: &str) -> ExtraFile {
        ExtraFile {
            path: p.into(),
            read_only: true,
        }
    }

    #[test]
    fn opts_syntax() {
        assert_eq!(
            split_opts("a=1,,2,b,c=x=y"),
            vec![
                ("a".into(), "1,2".into()),
                ("b".into(), String::new()),
                ("c".into(), "x=y".into())
            ]
        );
    }

    #[test]
    fn mkosi_drives() {
        // What mkosi's Drives= passes (qemu.py / vmspawn.py).
        let args = words(
            "-blockdev driver=raw,node-name=scratch,file.driver=file,file.filename=/var/tmp/mkosi-drive-scratch,\
             file.aio=io_uring,file.locking=off,cache.direct=on,cache.no-flush=yes \
             -device virtio-blk-pci,drive=scratch",
        );
        assert_eq!(files(&args), vec![rw("/var/tmp/mkosi-drive-scratch")]);
    }

    #[test]
    fn drive_and_blockdev_forms() {
        let args = words(
            "-drive if=none,id=a,file=/d/a.raw,format=raw \
             -drive file=/d/b.iso,media=cdrom \
             -drive file=/d/c,,comma.raw,readonly=on \
             --blockdev driver=file,filename=/d/e.img,node-name=e \
             -blockdev driver=qcow2,read-only=on,file.driver=file,file.filename=/d/f.qcow2 \
             -blockdev driver=raw,file.driver=file,file.read-only=on,file.filename=/d/g \
             -cdrom /d/h.iso -hda /d/i.raw -drive file=relative.raw \
             -device virtio-blk-pci,drive=a -kernel /k",
        );
        assert_eq!(
            files(&args),
            vec![
                rw("/d/a.raw"),
                ro("/d/b.iso"),
                ro("/d/c,comma.raw"),
                rw("/d/e.img"),
                ro("/d/f.qcow2"),
                ro("/d/g"),
                ro("/d/h.iso"),
                rw("/d/i.raw"),
            ]
        );
    }

    #[test]
    fn json_blockdev_and_duplicates() {
        let args = vec![
            "-blockdev".to_string(),
            r#"{"driver":"qcow2","node-name":"q","read-only":true,"file":{"driver":"file","filename":"/d/q.qcow2"}}"#
                .to_string(),
            "-blockdev".into(),
            r#"{"driver":"raw","file":{"driver":"file","filename":"/d/r.raw"}}"#.into(),
            "-drive".into(),
            "file=/d/q.qcow2,if=none".into(),
        ];
        assert_eq!(files(&args), vec![rw("/d/q.qcow2"), rw("/d/r.raw")]);
        // A trailing option without a value names nothing.
        assert!(files(&words("-drive")).is_empty());
    }
}
