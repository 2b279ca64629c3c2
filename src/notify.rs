//! Readiness for systemd (`Type=notify`): `READY=1` once the server accepts connections,
//! `STOPPING=1` when it begins its graceful shutdown, sent to `$NOTIFY_SOCKET` (a datagram
//! socket; `@name` is one in the abstract namespace). Without `$NOTIFY_SOCKET` (not under
//! systemd) nothing is sent. The protocol is a few lines; no library is needed for it.

/// Sends `state` (`KEY=value` lines) to systemd's notification socket, if there is one. A
/// failure is logged, never fatal: the server serves either way.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(socket = ?path, "cannot notify systemd ({state:?}): {e}");
    }
}

#[cfg(target_os = "linux")]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_path: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}
