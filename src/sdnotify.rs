//! systemd integration without a library: the notification protocol (`READY=1`,
//! `STATUS=…`, `WATCHDOG=1`, `STOPPING=1` as datagrams to `$NOTIFY_SOCKET`) and socket
//! activation (listening sockets inherited as fds 3… when `$LISTEN_PID` is this process).
//! Both are a few lines of documented protocol (sd_notify(3), sd_listen_fds(3)); a crate
//! would add a dependency for less than this file. Outside systemd every call is a no-op.

use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

/// Send `state` to the service manager. `Ok(false)` when not run by systemd.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The listening sockets systemd passed to this process (socket activation), taken once:
/// the variables are removed so that children do not inherit them.
pub fn take_listen_fds() -> Vec<RawFd> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // SAFETY: called once at start-up, before other threads read the environment.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !pid_ok || n <= 0 {
        return Vec::new();
    }
    (3..3 + n).collect()
}

/// The first inherited socket as a TCP listener, if systemd passed one.
pub fn inherited_listener() -> std::io::Result<Option<std::net::TcpListener>> {
    let Some(fd) = take_listen_fds().into_iter().next() else {
        return Ok(None);
    };
    // SAFETY: systemd passed `fd` to us as an open listening socket we now own.
    let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    l.set_nonblocking(true)?;
    // A socket that is not a bound TCP socket is refused rather than guessed at.
    l.local_addr()?;
    Ok(Some(l))
}
