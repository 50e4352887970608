//! A throwaway NATS server, with JetStream, for tests and `imctl cluster`.
//!
//! [`LocalNats::start`] runs a real `nats-server` on a free loopback port
//! with its JetStream store in a fresh directory under `/tmp`; dropping it
//! kills the server and deletes the directory (each test starts its own:
//! subjects are the same in every cluster). [`LocalNats::stop`] or [`LocalNats::kill_hard`] and then
//! [`LocalNats::start_again`] restart it on the same port with the same
//! store, for tests of NATS restarts.
//!
//! The server dies with this process, even when the process is killed
//! outright (Ctrl-C, `kill -9`): Linux sends it `SIGKILL` when its parent
//! goes (`PR_SET_PDEATHSIG`). It has a process group of its own, so a Ctrl-C
//! at the terminal reaches only this process, which can then stop the
//! server after its own orderly shutdown.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// Where the binary is looked for after `PATH` (Debian installs it in /usr/sbin).
const WELL_KNOWN_BINS: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];

/// How long the server may take to accept clients with JetStream on before
/// it is killed: nothing here may hang.
const START_LIMIT: Duration = Duration::from_secs(15);

/// How long the server may take to shut down after `SIGTERM` before it is
/// killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Free ports to try: another process may take the one we picked before the
/// server binds it.
const START_TRIES: usize = 5;

/// Lines of the server log quoted in an error.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "nats-server is not installed: install the Debian package \"nats-server\" \
         (not found on PATH or in /usr/sbin)"
    )]
    NotInstalled,
    #[error(
        "IMCTL_NATS_BIN={} is not an executable file: point it at a nats-server \
         binary, or unset it to use the one on PATH",
        path.display()
    )]
    BadBin { path: PathBuf },
    #[error("could not {what}: {err}")]
    Io { what: String, err: io::Error },
    /// `detail` is empty or the tail of the server log.
    #[error("{what} failed ({status}){detail}")]
    Failed {
        what: String,
        status: String,
        detail: String,
    },
    #[error("{what} took longer than {} s, so it was killed{detail}", limit.as_secs())]
    TimedOut {
        what: String,
        limit: Duration,
        detail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |err| Error::Io {
        what: what.into(),
        err,
    }
}

/// A running (or stopped) throwaway server; see the module documentation.
#[derive(Debug)]
pub struct LocalNats {
    bin: PathBuf,
    /// Unique, so readiness checks know the server answering is ours.
    name: String,
    host: Ipv4Addr,
    port: u16,
    start_limit: Duration,
    /// Behind a mutex so `is_running` and `pid`, which have only a shared
    /// reference, can reach it.
    child: Mutex<Option<Child>>,
    // Last, so it is removed after `drop` has killed the server.
    dir: tempfile::TempDir,
}

impl LocalNats {
    /// Starts a server with JetStream on a free loopback port, its store in
    /// a new temporary directory; returns once it accepts clients.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(find_binary()?, START_LIMIT, Ipv4Addr::LOCALHOST)
    }

    /// [`start`](Self::start), listening on `host` instead of loopback (for
    /// nodes in other network namespaces, reaching it over a bridge).
    pub fn start_on(host: Ipv4Addr) -> Result<Self, Error> {
        Self::start_with(find_binary()?, START_LIMIT, host)
    }

    fn start_with(bin: PathBuf, start_limit: Duration, host: Ipv4Addr) -> Result<Self, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Under /tmp, like pg_local's, so leftovers are found in one place.
        let dir = tempfile::Builder::new()
            .prefix("imctl-nats-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in("/tmp")
            .map_err(io("create a temporary directory under /tmp"))?;
        let name = format!(
            "imctl-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut nats = LocalNats {
            bin,
            name,
            host,
            port: 0,
            start_limit,
            child: Mutex::new(None),
            dir,
        };
        nats.start_on_a_free_port()?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:<port>` (or the host it listens on).
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the store, the log and the pid file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// JetStream's store (`-sd`), kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The server's log, and its stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// The server's process id while it runs (for callers that reap other
    /// children and must leave this one alone).
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.as_ref().map(std::process::Child::id)
    }

    /// Whether the server process is alive (it may have died on its own).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server, letting it shut down cleanly (`SIGTERM`), or kills
    /// it after a few seconds; does nothing if stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child_mut().take() else {
            return;
        };
        // An exited child not yet reaped keeps its pid, so the signal cannot
        // reach another process.
        if let Ok(None) = child.try_wait() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_LIMIT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server (`SIGKILL`), as a crash would; does nothing if stopped.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child_mut().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again on the same port with the same
    /// JetStream store, so streams and their messages survive; does nothing
    /// if it is running.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.is_running() {
            return Ok(());
        }
        // Reaps a server that died on its own.
        self.kill_hard();
        self.spawn_server()
    }

    fn child_mut(&mut self) -> &mut Option<Child> {
        self.child.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_on_a_free_port(&mut self) -> Result<(), Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            // Bound and released at once: the server binds it a moment later,
            // and if someone else got there first, we try another.
            self.port = TcpListener::bind((self.host, 0))
                .and_then(|l| l.local_addr())
                .map_err(io(format!("find a free port on {}", self.host)))?
                .port();
            match self.spawn_server() {
                Err(Error::Failed { detail, .. })
                    if tries < START_TRIES && detail.contains("address already in use") => {}
                result => return result,
            }
        }
    }

    /// Starts the server on `self.port` and waits until it is ready, or
    /// kills it and says why not.
    fn spawn_server(&mut self) -> Result<(), Error> {
        let log_path = self.log_path();
        let log_start = fs::metadata(&log_path).map_or(0, |m| m.len());
        // Its stdout and stderr too: what it says before it opens the log
        // (bad flags) goes there.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("open {}", log_path.display())))?;
        let stderr = log.try_clone().map_err(io("duplicate a file handle"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", &self.host.to_string(), "-p", &self.port.to_string()])
            .args(["-n", &self.name, "-js", "-sd"])
            .arg(self.store_dir())
            .arg("-l")
            .arg(&log_path)
            // For finding and stopping a leftover by hand.
            .arg("-P")
            .arg(self.dir.path().join("nats.pid"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let child = spawn(cmd).map_err(io(format!("run {}", self.bin.display())))?;
        *self.child_mut() = Some(child);
        let what = format!("starting nats-server on port {}", self.port);
        let result = self.wait_until_ready(&what);
        if result.is_err() {
            self.kill_hard();
        }
        result.map_err(|e| match e {
            Error::Failed { what, status, .. } => Error::Failed {
                what,
                status,
                detail: detail("the server log", &read_from(&log_path, log_start)),
            },
            Error::TimedOut { what, limit, .. } => Error::TimedOut {
                what,
                limit,
                detail: detail("the server log", &read_from(&log_path, log_start)),
            },
            e => e,
        })
    }

    /// Waits until the server greets a client as itself with JetStream on.
    /// It enables JetStream (recovering the store) before it listens, so
    /// that greeting means JetStream is ready.
    fn wait_until_ready(&mut self, what: &str) -> Result<(), Error> {
        let (host, port) = (self.host, self.port);
        let (name, limit) = (self.name.clone(), self.start_limit);
        let deadline = Instant::now() + limit;
        let Some(child) = self.child_mut().as_mut() else {
            return Ok(());
        };
        loop {
            if let Some(status) = child.try_wait().map_err(io(format!("wait for {what}")))? {
                return Err(Error::Failed {
                    what: what.to_owned(),
                    status: status.to_string(),
                    detail: String::new(),
                });
            }
            if greets_with_jetstream(host, port, &name, deadline) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::TimedOut {
                    what: what.to_owned(),
                    limit,
                    detail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        // The store is thrown away, so nothing is lost by not shutting down cleanly.
        self.kill_hard();
    }
}

/// Whether the server on `port` sends an `INFO` naming it `name`, with
/// JetStream on, before `deadline` (and at most a second).
fn greets_with_jetstream(host: Ipv4Addr, port: u16, name: &str, deadline: Instant) -> bool {
    let addr = SocketAddr::from((host, port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(250)) else {
        return false;
    };
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let _ = stream.set_read_timeout(Some(wait));
    let mut line = String::new();
    if BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .is_err()
    {
        return false;
    }
    line.starts_with("INFO ")
        && line.contains(&format!("\"server_name\":\"{name}\""))
        && line.contains("\"jetstream\":true")
}

/// Spawns `cmd` so that its process is killed when this process dies, and
/// puts it in a process group of its own.
///
/// Linux sends the `PR_SET_PDEATHSIG` signal when the *thread* that forked
/// the child ends, not the process: a test's thread or a runtime's blocking
/// thread would take the server with it. So every server is forked by one
/// helper thread that lives until the process exits.
fn spawn(mut cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::SyncSender<io::Result<Child>>);
    static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec, and makes only
    // async-signal-safe calls and no allocation.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // Had the parent already died, no signal would ever come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };

    let (reply, result) = mpsc::sync_channel(1);
    let gone = || io::Error::other("the thread that starts nats-server has gone");
    {
        let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        if spawner.is_none() {
            let (jobs, queue) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("nats-spawner".into())
                .spawn(move || {
                    // Ends only with the process: the static keeps a sender.
                    for (mut cmd, reply) in queue {
                        let _ = reply.send(cmd.spawn());
                    }
                })?;
            *spawner = Some(jobs);
        }
        let jobs = spawner.as_ref().ok_or_else(gone)?;
        jobs.send((cmd, reply)).map_err(|_| gone())?;
    }
    result.recv().map_err(|_| gone())?
}

/// For tests: the value, or `None` after printing `SKIPPED <test>:
/// nats-server not installed` when it is missing — unless
/// `IMCTL_REQUIRE_NATS=1` (CI), which panics; any other error panics.
pub fn or_skip<T>(test: &str, result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(Error::NotInstalled) if std::env::var("IMCTL_REQUIRE_NATS").as_deref() != Ok("1") => {
            // Past the test harness's capture, so it is seen.
            let _ = writeln!(io::stderr(), "SKIPPED {test}: nats-server not installed");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// The `nats-server` binary: `$IMCTL_NATS_BIN` if set, else the first on
/// `PATH`, else /usr/sbin/nats-server or /usr/bin/nats-server.
pub fn find_binary() -> Result<PathBuf, Error> {
    find_binary_in(std::env::var_os("IMCTL_NATS_BIN"), std::env::var_os("PATH"))
}

/// [`find_binary`] with the environment as arguments, for tests.
fn find_binary_in(bin: Option<OsString>, path: Option<OsString>) -> Result<PathBuf, Error> {
    if let Some(bin) = bin.filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(Error::BadBin { path: bin })
        };
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("nats-server"))
        .chain(WELL_KNOWN_BINS.map(PathBuf::from))
        .find(|p| is_executable(p))
        .ok_or(Error::NotInstalled)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What `path` holds past byte `offset`, or nothing if it cannot be read.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let _ = fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut bytes)
    });
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last lines of `text`, indented under the error's first line.
fn detail(source: &str, text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    format!("; {source} ends with:\n    {}", tail.join("\n    "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process of `a_server_dies_with_its_parent_process`.
    const ORPHAN_HELPER: &str = "IMCTL_NATS_ORPHAN_HELPER";

    fn accepts_tcp(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    }

    /// The server's greeting, its `INFO` line.
    fn info(nats: &LocalNats) -> String {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, nats.port())).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    /// Publishes `payload` to `subject` and returns the reply, in the raw
    /// protocol (JetStream's API is request and reply).
    fn request(nats: &LocalNats, subject: &str, payload: &str) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, nats.port())).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("INFO "), "{line}");
        write!(
            stream,
            "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\n\
             SUB _INBOX.test 1\r\nPUB {subject} _INBOX.test {}\r\n{payload}\r\n",
            payload.len()
        )
        .unwrap();
        loop {
            line.clear();
            assert_ne!(reader.read_line(&mut line).unwrap(), 0, "connection closed");
            if line.starts_with("PING") {
                stream.write_all(b"PONG\r\n").unwrap();
            } else if line.starts_with("MSG ") {
                let len: usize = line.split_whitespace().last().unwrap().parse().unwrap();
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body).unwrap();
                return String::from_utf8_lossy(&body[..len]).into_owned();
            } else {
                assert!(!line.starts_with("-ERR"), "{subject}: {line}");
            }
        }
    }

    fn stream_info(nats: &LocalNats) -> String {
        request(nats, "$JS.API.STREAM.INFO.ORDERS", "")
    }

    #[test]
    fn a_fresh_server_has_jetstream_and_drop_leaves_nothing() {
        let test = "a_fresh_server_has_jetstream_and_drop_leaves_nothing";
        let Some(nats) = or_skip(test, LocalNats::start()) else {
            return;
        };
        let port = nats.port();
        assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
        assert!(nats.is_running());
        let info = info(&nats);
        assert!(info.starts_with("INFO {"), "{info}");
        assert!(info.contains("\"jetstream\":true"), "{info}");
        let dir = nats.dir().to_owned();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(dir.starts_with("/tmp"));
        let log = fs::read_to_string(nats.log_path()).unwrap();
        assert!(log.contains("Server is ready"), "{log}");
        assert!(nats.store_dir().is_dir());

        drop(nats);
        assert!(!accepts_tcp(port));
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }

    #[test]
    fn restarts_on_the_same_port_and_keeps_jetstream_data() {
        let test = "restarts_on_the_same_port_and_keeps_jetstream_data";
        let Some(mut nats) = or_skip(test, LocalNats::start()) else {
            return;
        };
        let port = nats.port();
        let created = request(
            &nats,
            "$JS.API.STREAM.CREATE.ORDERS",
            r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"file"}"#,
        );
        assert!(!created.contains("\"error\""), "{created}");
        let ack = request(&nats, "orders.1", "hello");
        assert!(ack.contains("\"seq\":1"), "{ack}");

        nats.stop();
        nats.stop();
        assert!(!nats.is_running());
        assert!(!accepts_tcp(port));
        nats.start_again().unwrap();
        nats.start_again().unwrap();
        assert_eq!(nats.port(), port);
        let after_stop = stream_info(&nats);
        assert!(after_stop.contains("\"messages\":1"), "{after_stop}");

        nats.kill_hard();
        nats.kill_hard();
        assert!(!nats.is_running());
        assert!(!accepts_tcp(port));
        nats.start_again().unwrap();
        assert!(nats.is_running());
        let after_kill = stream_info(&nats);
        assert!(after_kill.contains("\"messages\":1"), "{after_kill}");
    }

    #[test]
    fn starting_again_on_a_taken_port_quotes_the_log() {
        let test = "starting_again_on_a_taken_port_quotes_the_log";
        let Some(mut nats) = or_skip(test, LocalNats::start()) else {
            return;
        };
        nats.stop();
        let _thief = TcpListener::bind((Ipv4Addr::LOCALHOST, nats.port())).unwrap();
        let err = nats.start_again().unwrap_err().to_string();
        assert!(err.contains("address already in use"), "{err}");
        assert!(err.contains("; the server log ends with:\n"), "{err}");
        assert!(!nats.is_running());
    }

    #[test]
    fn a_server_that_exits_or_never_gets_ready_is_an_error() {
        let test = "a_server_that_exits_or_never_gets_ready_is_an_error";
        if or_skip(test, find_binary()).is_none() {
            return;
        }
        let exits = LocalNats::start_with("/bin/false".into(), START_LIMIT, Ipv4Addr::LOCALHOST)
            .unwrap_err();
        assert!(matches!(exits, Error::Failed { .. }), "{exits}");

        // A server that never answers, as a hung one would.
        let script = tempfile::Builder::new().tempdir().unwrap();
        let hangs = script.path().join("hangs");
        fs::write(&hangs, "#!/bin/sh\necho stuck\nexec sleep 60\n").unwrap();
        fs::set_permissions(&hangs, fs::Permissions::from_mode(0o755)).unwrap();
        let begun = Instant::now();
        let err =
            LocalNats::start_with(hangs, Duration::from_secs(1), Ipv4Addr::LOCALHOST).unwrap_err();
        assert!(begun.elapsed() < Duration::from_secs(5));
        let message = err.to_string();
        assert!(matches!(err, Error::TimedOut { .. }), "{message}");
        assert!(message.contains("took longer than 1 s"), "{message}");
        assert!(message.ends_with("ends with:\n    stuck"), "{message}");
    }

    #[test]
    fn a_server_outlives_the_thread_that_started_it() {
        let test = "a_server_outlives_the_thread_that_started_it";
        let started = std::thread::spawn(LocalNats::start).join().unwrap();
        let Some(nats) = or_skip(test, started) else {
            return;
        };
        // The death signal, had it come, comes as the thread ends.
        std::thread::sleep(Duration::from_millis(300));
        assert!(nats.is_running());
        assert!(info(&nats).contains("\"jetstream\":true"));
    }

    /// Not a test: run in a child process by
    /// `a_server_dies_with_its_parent_process`, it starts a server, says
    /// where, and waits to be killed.
    #[test]
    #[ignore = "a helper, run by a_server_dies_with_its_parent_process"]
    fn orphan_helper() {
        if std::env::var_os(ORPHAN_HELPER).is_none() {
            return;
        }
        let nats = LocalNats::start().unwrap();
        let pid = nats.child.lock().unwrap().as_ref().unwrap().id();
        // On a line of its own: the harness has begun one.
        println!("\nNATS_SERVER {pid} {}", nats.dir().display());
        io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(30));
    }

    #[test]
    fn a_server_dies_with_its_parent_process() {
        let test = "a_server_dies_with_its_parent_process";
        if or_skip(test, find_binary()).is_none() {
            return;
        }
        // The harness's name for the helper: this module's path without the crate.
        let module = module_path!().split_once("::").unwrap().1;
        let mut helper = Command::new(std::env::current_exe().unwrap())
            .arg(format!("{module}::orphan_helper"))
            .args(["--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(ORPHAN_HELPER, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let said = BufReader::new(helper.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("NATS_SERVER ").map(str::to_owned));
        // SIGKILL: no destructor or exit handler runs.
        helper.kill().unwrap();
        helper.wait().unwrap();
        let said = said.expect("the helper did not start a server");
        let mut words = said.split(' ');
        let pid: u32 = words.next().unwrap().parse().unwrap();
        let dir = PathBuf::from(words.next().unwrap());

        // Gone, or a zombie waiting for init to reap it.
        let alive = || {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survived = alive();
        if survived {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = fs::remove_dir_all(&dir);
        assert!(!survived, "nats-server {pid} outlived its parent");
    }

    #[test]
    fn the_binary_comes_from_imctl_nats_bin_then_path() {
        let bogus = Some(OsString::from("/nonexistent/nats-server"));
        let err = find_binary_in(bogus, None).unwrap_err();
        assert!(matches!(err, Error::BadBin { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with("IMCTL_NATS_BIN=/nonexistent/nats-server is not"),
            "{message}"
        );
        // A directory is not a binary.
        let dir = tempfile::tempdir().unwrap();
        let err = find_binary_in(Some(dir.path().into()), None).unwrap_err();
        assert!(matches!(err, Error::BadBin { .. }), "{err}");

        let fake = dir.path().join("nats-server");
        fs::write(&fake, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(["relative/dir".as_ref(), dir.path()]).unwrap();
        assert_eq!(find_binary_in(None, Some(path)).unwrap(), fake);
        assert_eq!(
            find_binary_in(Some(fake.clone().into()), None).unwrap(),
            fake
        );
        // Empty is unset.
        let found = find_binary_in(Some(OsString::new()), Some(dir.path().into()));
        assert_eq!(found.unwrap(), fake);
    }

    #[test]
    fn an_error_quotes_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n\n")).collect();
        let d = detail("the server log", &text);
        assert!(
            d.starts_with("; the server log ends with:\n    line 11\n"),
            "{d}"
        );
        assert!(d.ends_with("line 30"), "{d}");
        assert_eq!(detail("x", " \n"), "");
    }
}
