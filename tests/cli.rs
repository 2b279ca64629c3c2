//! The binary: `--help`, the listening line, start-up errors as one clear line and a
//! non-zero exit, never touching a file that is not ours.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--host",
        "TIDINGS_HOST",
        "--port",
        "PORT",
        "--db",
        "TIDINGS_DB",
        "tidings.redb",
        "--max-message-bytes",
        "65536",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn prints_where_it_listens_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(dir.path().join("chat.redb"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "{line:?}"
    );
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert_ne!(port, 0);
    assert!(dir.path().join("chat.redb").exists());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    let text = "my precious notes\n".repeat(500);
    std::fs::write(&path, &text).expect("write");
    let out = Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("cannot open database"), "{stderr}");
    assert!(stderr.contains("notes.txt"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
}

/// Runs the server binary on `db` and returns its stderr, asserting it refused to start.
fn refused(db: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(db)
        .env("RUST_LOG", "off")
        .output()
        .expect("run");
    assert!(!out.status.success(), "must refuse {}", db.display());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    stderr
}

/// A database with a few messages, closed.
fn sample_db(path: &std::path::Path) {
    use tidings::message::ChatInput;
    let (_, mut writer) = tidings::storage::Store::open(path).expect("create");
    let inputs: Vec<ChatInput> = (0..50)
        .map(|i| ChatInput {
            content: format!("message {i} {}", "x".repeat(200)),
            client_offset: Some(tidings::message::ClientOffset(format!("o-{i}"))),
            author: None,
        })
        .collect();
    writer.append_batch(&inputs, 1).expect("append");
}

#[test]
fn a_damaged_database_is_refused_without_a_panic_and_never_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chat.redb");
    sample_db(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    // Damage the header and a stretch of pages.
    for b in bytes.iter_mut().take(64) {
        *b ^= 0x5a;
    }
    let middle = bytes.len() / 2;
    for b in bytes.iter_mut().skip(middle).take(4096) {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).expect("write");
    let stderr = refused(&path);
    println!("{stderr}");
    assert!(stderr.contains("cannot open database"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "left untouched");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_read_only_database_file_is_refused_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Root ignores file permissions, so as root the file sits on a tmpfs remounted
    // read-only; otherwise a chmod does it.
    let mount = dir.path().join("ro");
    std::fs::create_dir(&mount).expect("mkdir");
    let root = is_root();
    if root {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&mount)
            .status()
            .expect("mount");
        assert!(status.success(), "root can mount a tmpfs here");
    }
    let path = mount.join("chat.redb");
    sample_db(&path);
    let before = std::fs::read(&path).expect("read");
    if root {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&mount)
            .status()
            .expect("remount");
        assert!(status.success());
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    }
    let stderr = refused(&path);
    let after = std::fs::read(&path).expect("read");
    if root {
        let _ = Command::new("umount").arg(&mount).status();
    }
    println!("{stderr}");
    assert!(stderr.contains("cannot open database"), "{stderr}");
    assert_eq!(after, before, "left untouched");
}
