//! Child processes that cannot outlive the test binary.
//!
//! Every server a test starts is spawned with `PR_SET_PDEATHSIG = SIGKILL`,
//! so the kernel kills it when its parent dies, even if the test binary is
//! killed with SIGKILL and no `Drop` runs. The signal fires when the *thread*
//! that forked the child exits, not the process, and cargo runs each test on
//! a thread of its own; so all children are forked from one spawner thread
//! that lives as long as the process.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// A running child process, killed (SIGKILL) and reaped on drop.
pub struct ManagedChild {
    child: Child,
    name: &'static str,
}

impl ManagedChild {
    /// Spawns `command` from the spawner thread, with stdin closed and the
    /// death signal armed.
    pub fn spawn(name: &'static str, mut command: Command) -> std::io::Result<ManagedChild> {
        command.stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .expect("spawner lock")
            .send((command, reply_tx))
            .expect("spawner thread is alive");
        let child = reply_rx.recv().expect("spawner replies")?;
        Ok(ManagedChild { child, name })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the process has exited (it is then reaped).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended, once it has (it is then reaped); `None` while
    /// it runs. Lets a caller tell a clean exit from a crash or a signal.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends a signal without reaping, e.g. SIGSTOP/SIGCONT for fault tests.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain syscall on a pid we own and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        // SIGKILL also ends a SIGSTOPped process, so fault tests that pause
        // a server need no cleanup of their own.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("e2e-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    })
}

/// A TCP port that was free a moment ago and that this process has not
/// handed out before. Another process may take it before the server binds,
/// so callers retry on a fresh port when a server fails to come up. The
/// kernel readily gives a just-released port again, so without the record
/// two calls in a row (a listener and its admin listener) can return the same
/// port.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner).insert(port) {
            return port;
        }
    }
}

/// Polls `ready` every 10 ms until it is true, the child exits, or `limit`
/// passes. This awaits a condition; it is not a sleep standing in for one.
pub fn wait_until(child: &mut ManagedChild, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ok(());
        }
        if child.has_exited() {
            return Err(format!("{} exited before it was ready", child.name));
        }
        if Instant::now() > deadline {
            return Err(format!("{} was not ready within {limit:?}", child.name));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Finds an executable: an override variable, then `PATH`, then `extra`
/// directories. Panics with `install_hint` when absent: a missing server is
/// a failure, never a silent skip.
pub fn find_binary(name: &str, override_var: &str, extra: &[PathBuf], install_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found on PATH (or via ${override_var}). Install it: {install_hint} — or run scripts/test, which installs it.")
        })
}
