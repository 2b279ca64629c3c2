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
