//! The binary: `--help`, the listening line, start-up errors as one clear line and a
//! non-zero exit, never touching a file that is not ours.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{ServerProcess, refused_in_one_line, server_command};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

/// Runs `tidings ARGS`, expecting it to fail with one line on stderr; returns that line.
fn fails_with_one_line(args: &[&str]) -> String {
    refused_in_one_line(Command::new(BIN).args(args))
}

#[test]
fn offline_commands_refuse_a_missing_database_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("typo.redb");
    let db = missing.to_str().expect("utf-8");
    let copy = dir.path().join("copy.redb");
    for args in [
        vec!["stats", "--db", db],
        vec!["export", "--db", db],
        vec!["backup", "--db", db, copy.to_str().expect("utf-8")],
    ] {
        let said = fails_with_one_line(&args);
        assert!(said.contains("does not exist"), "{args:?}: {said}");
        assert!(said.contains("typo.redb"), "{args:?}: {said}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
        assert!(!copy.exists(), "{args:?} created the backup");
    }
}

#[test]
fn backup_never_overwrites_a_file_not_even_one_that_appears_during_the_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.redb");
    sample_db(&db);
    let db_arg = db.to_str().expect("utf-8");
    let dest = dir.path().join("backup.redb");
    let dest_arg = dest.to_str().expect("utf-8");

    // A leftover `.partial` of someone else's is neither overwritten nor removed.
    let partial = dir.path().join("backup.redb.partial");
    std::fs::write(&partial, "keep me").expect("write");
    let said = fails_with_one_line(&["backup", "--db", db_arg, dest_arg]);
    assert!(said.contains("already exists"), "{said}");
    assert_eq!(std::fs::read_to_string(&partial).expect("read"), "keep me");
    assert!(!dest.exists());
    std::fs::remove_file(&partial).expect("remove");

    // A destination that does not exist when the backup starts but does when it finishes: a
    // dangling symlink is just that (`exists()` says no, the name is taken). A rename would
    // replace it; the backup must refuse.
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &dest).expect("symlink");
    let said = fails_with_one_line(&["backup", "--db", db_arg, dest_arg]);
    assert!(said.contains("already exists"), "{said}");
    assert!(
        std::fs::symlink_metadata(&dest)
            .expect("still there")
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    assert!(!target.exists() && !partial.exists(), "nothing left behind");

    // And with a free name it works.
    std::fs::remove_file(&dest).expect("remove");
    let out = Command::new(BIN)
        .args(["backup", "--db", db_arg, dest_arg])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dest.is_file() && !partial.exists());
}

#[test]
fn a_failing_test_leaves_no_server_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.redb");
    let pid = std::sync::atomic::AtomicU32::new(0);
    let outcome = std::panic::catch_unwind(|| {
        let mut server = ServerProcess::spawn(
            server_command(0, &db)
                .env("RUST_LOG", "off")
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        server.wait_listening();
        pid.store(server.id(), std::sync::atomic::Ordering::SeqCst);
        panic!("an assertion fails while the server runs");
    });
    assert!(outcome.is_err());
    let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(pid, 0);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "server {pid} is still running (or was never reaped)"
    );
}

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
    let mut child = ServerProcess::spawn(
        Command::new(BIN)
            .args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(dir.path().join("chat.redb"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let line = child.wait_listening();
    drop(child);
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
fn refused(db: &Path) -> String {
    let db = db.to_str().expect("utf-8");
    fails_with_one_line(&["--host", "127.0.0.1", "--port", "0", "--db", db])
}

/// A database with a few messages, closed.
fn sample_db(path: &std::path::Path) {
    use tidings::message::ChatInput;
    let (_, mut writer) = tidings::storage::Store::open(path, 1 << 20).expect("create");
    let inputs: Vec<ChatInput> = (0..50)
        .map(|i| ChatInput {
            content: format!("message {i} {}", "x".repeat(200)),
            client_offset: Some(tidings::message::ClientOffset(format!("o-{i}"))),
            author: None,
            user: None,
            event: None,
            room: None,
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

/// `--rate-limit` is 0 (off) or 0.001 to 1,000,000 messages a second: a value outside (a rate
/// so slow that its wait overflowed, and panicked the handler of the second message; NaN,
/// infinite or negative, which used to mean "no limit") is refused at start-up, naming the
/// flag, before anything is opened.
#[test]
fn a_rate_limit_out_of_its_range_is_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.redb");
    for bad in ["1e-20", "-1", "NaN", "inf", "2e6"] {
        let mut child = Command::new(BIN)
            .args(["--host", "127.0.0.1", "--port", "0", "--rate-burst", "1"])
            .arg(format!("--rate-limit={bad}"))
            .arg("--db")
            .arg(&db)
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("--rate-limit {bad} was accepted: the server started");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            pipe.read_to_string(&mut stderr).expect("read stderr");
        }
        assert!(!status.success(), "--rate-limit {bad}: {status}");
        assert!(
            stderr.contains("--rate-limit"),
            "--rate-limit {bad}: {stderr}"
        );
        assert!(!db.exists(), "--rate-limit {bad} created the database");
    }
}

/// `--server-admin` needs identities, and each is a user id: refused at start-up, naming the
/// flag, before the database is created.
#[test]
fn server_admins_without_identities_or_with_bad_ids_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.redb");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a secret of more than thirty-two bytes, surely\n").expect("secret");
    let db_flag = db.to_str().expect("utf-8 path");
    let secret_flag = secret.to_str().expect("utf-8 path");
    let line = fails_with_one_line(&["--port", "0", "--db", db_flag, "--server-admin", "root"]);
    assert!(
        line.contains("--server-admin") && line.contains("--auth optional"),
        "{line}"
    );
    let long = "x".repeat(257);
    for bad in ["", long.as_str()] {
        let line = fails_with_one_line(&[
            "--port",
            "0",
            "--db",
            db_flag,
            "--auth",
            "optional",
            "--jwt-secret-file",
            secret_flag,
            "--server-admin",
            bad,
        ]);
        assert!(
            line.contains("--server-admin") && line.contains("not a user id"),
            "{line}"
        );
    }
    assert!(!db.exists(), "a refused start created the database");
}

/// Erasing a user's data for good, as README describes it: a deletion makes the row a
/// tombstone, but redb does not promise to zero the pages it frees; `export` then `import`
/// into a new file rewrites it without them, tombstones and deletions kept (a retry of the
/// deleted message is still a duplicate).
#[test]
fn export_and_import_rewrite_a_file_without_deleted_words() {
    use tidings::access::RoomEvent;
    use tidings::message::{AppendOutcome, ChatInput, ClientOffset, MessageId};
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old.redb");
    let secret = "my home address is 12 Secret Lane";
    let said = ChatInput {
        content: secret.into(),
        client_offset: Some(ClientOffset("o-1".into())),
        author: Some("Bob".into()),
        user: Some("bob".into()),
        room: Some("ops".into()),
        event: None,
    };
    {
        let (_, mut writer) = tidings::storage::Store::open(&old, 1 << 20).expect("create");
        writer
            .append_batch(std::slice::from_ref(&said), 1)
            .expect("append");
        let dedup = said.dedup_key().map(|key| key.0);
        let deletion = ChatInput {
            content: String::new(),
            client_offset: None,
            author: Some("Bob".into()),
            user: Some("bob".into()),
            room: Some("ops".into()),
            event: Some(RoomEvent::Deleted { id: 1, dedup }),
        };
        writer.append_batch(&[deletion], 2).expect("delete");
    }
    let found = |path: &std::path::Path| {
        let bytes = std::fs::read(path).expect("read");
        bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
    };
    let export = dir.path().join("all.jsonl");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "export".as_ref(),
        "--db".as_ref(),
        old.as_os_str(),
        "--out".as_ref(),
        export.as_os_str(),
    ]);
    let fresh = dir.path().join("fresh.redb");
    run(&[
        "import".as_ref(),
        "--db".as_ref(),
        fresh.as_os_str(),
        export.as_os_str(),
    ]);
    assert!(!found(&fresh), "the rewritten file holds the deleted words");
    let lines = std::fs::read_to_string(&export).expect("export");
    assert!(!lines.contains(secret));
    let (reader, mut writer) = tidings::storage::Store::open(&fresh, 1 << 20).expect("open");
    let rows = reader.read_range(0, 10, 10, usize::MAX).expect("read");
    assert_eq!(rows.len(), 2, "the tombstone and the deletion");
    assert!(rows[0].message.is_tombstone());
    assert_eq!(
        writer.append_batch(&[said], 3).expect("retry"),
        vec![AppendOutcome::Duplicate(MessageId(1))]
    );
}

/// Under systemd (`Type=notify`): `READY=1` reaches `$NOTIFY_SOCKET` once the server accepts
/// connections, `STOPPING=1` when SIGTERM starts the graceful shutdown; a socket of the test's
/// own stands in for systemd's, by path and in the abstract namespace.
#[test]
fn tells_systemd_when_it_is_ready_and_when_it_stops() {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let dir = tempfile::tempdir().expect("tempdir");
    let by_path = dir.path().join("notify.sock");
    let abstract_name = format!("tidings-test-notify-{}", std::process::id());
    let sockets = [
        (
            UnixDatagram::bind(&by_path).expect("bind a notify socket"),
            by_path.to_string_lossy().into_owned(),
        ),
        (
            UnixDatagram::bind_addr(
                &SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("address"),
            )
            .expect("bind an abstract notify socket"),
            format!("@{abstract_name}"),
        ),
    ];
    for (socket, name) in sockets {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .expect("timeout");
        let mut child = ServerProcess::spawn(
            Command::new(BIN)
                .args(["--host", "127.0.0.1", "--port", "0", "--db"])
                .arg(dir.path().join(format!("chat-{}.redb", name.len())))
                .env("RUST_LOG", "warn")
                .env("NOTIFY_SOCKET", &name)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let mut datagram = [0u8; 512];
        let n = socket.recv(&mut datagram).expect("READY=1 within 15 s");
        let ready = String::from_utf8_lossy(&datagram[..n]).into_owned();
        assert!(ready.starts_with("READY=1\n"), "{ready:?}");
        // Ready means accepting: the port in its status answers at once.
        let address = ready
            .rsplit("http://")
            .next()
            .expect("the address")
            .trim()
            .to_string();
        let mut http = std::net::TcpStream::connect(&address).expect("accepting when ready");
        write!(http, "GET /healthz HTTP/1.0\r\n\r\n").expect("request");
        let mut answer = String::new();
        http.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        child.terminate();
        let n = socket.recv(&mut datagram).expect("STOPPING=1 within 15 s");
        let stopping = String::from_utf8_lossy(&datagram[..n]).into_owned();
        assert!(
            stopping.starts_with("STOPPING=1\n"),
            "{stopping:?} ({name})"
        );
        let status = child.wait().expect("exit");
        assert!(status.success(), "{status}");
    }
}
