//! A throwaway PostgreSQL server for tests and, later, `imctl cluster`.
//!
//! [`LocalPostgres::start`] runs `initdb` into a fresh directory under `/tmp`
//! and starts a real server on a free loopback port; dropping it stops the
//! server and deletes the directory. [`shared`] is one such server per
//! process, for tests that each create their own database on it.
//!
//! Durability against power loss is off (`fsync`, full-page writes): the
//! data is thrown away. A commit still reaches the operating system before
//! it returns (`synchronous_commit` stays on), so killing the server loses
//! nothing it acknowledged, as the restart tests need.
//! PostgreSQL refuses to run as root, so under root (as in CI) the server's
//! tools run as the `postgres` user, or `nobody`, who owns the directory.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates, named in every URL.
pub const USER: &str = "imctl";

/// The tools that make a directory PostgreSQL's bin directory.
const SERVER_TOOLS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Seconds `pg_ctl` waits for the server to start or stop (`-t`).
const PG_CTL_WAIT: u64 = 30;

/// How long any tool may run before it is killed: nothing here may hang.
const INITDB_LIMIT: Duration = Duration::from_secs(120);
const PG_CTL_LIMIT: Duration = Duration::from_secs(PG_CTL_WAIT + 15);
const CLIENT_LIMIT: Duration = Duration::from_secs(30);

/// Free ports to try: another process may take the one we picked before the
/// server binds it.
const START_TRIES: usize = 5;

/// Lines of a log or of a tool's output quoted in an error.
const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL is not installed: install the Debian package \"postgresql\" \
         (initdb and pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin)"
    )]
    NotInstalled,
    #[error(
        "IMCTL_PG_BIN={} has no {missing}: point it at PostgreSQL's bin directory \
         (the one holding initdb, pg_ctl and postgres)",
        dir.display()
    )]
    BadBinDir { dir: PathBuf, missing: String },
    #[error("{tool} not found in {searched}: install the Debian package \"postgresql-client\"")]
    NoClientTool {
        tool: &'static str,
        searched: String,
    },
    #[error(
        "running as root, and neither the postgres nor the nobody user exists to run \
         PostgreSQL as (it refuses to run as root): create one of them"
    )]
    NoUnprivilegedUser,
    #[error("invalid database name {0:?}: use 1 to 63 characters from a-z, 0-9 and _")]
    InvalidName(String),
    #[error("could not {what}: {err}")]
    Io { what: String, err: std::io::Error },
    /// `detail` is empty or the tail of the tool's output or the server log.
    #[error("{what} failed ({status}){detail}")]
    Failed {
        what: String,
        status: String,
        detail: String,
    },
    #[error("{what} did not finish within {} s and was killed{detail}", limit.as_secs())]
    TimedOut {
        what: String,
        limit: Duration,
        detail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    move |err| Error::Io {
        what: what.into(),
        err,
    }
}

/// A running (or stopped) throwaway server; see the module documentation.
#[derive(Debug)]
pub struct LocalPostgres {
    bin: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    running: bool,
    // Last, so it is removed after `drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl LocalPostgres {
    /// Creates a cluster in a new temporary directory and starts it on a
    /// free loopback port.
    pub fn start() -> Result<Self, Error> {
        let bin = find_bin_dir()?;
        let run_as = unprivileged_user()?;
        // Under /tmp, not $TMPDIR: the unprivileged user must be able to reach
        // it, and the socket path must stay under the 107-byte limit.
        let dir = tempfile::Builder::new()
            .prefix("imctl-pg-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in("/tmp")
            .map_err(io("create a temporary directory under /tmp"))?;
        if let Some(user) = run_as {
            // Still empty, so the directory itself is all there is to chown.
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).map_err(io(
                format!("chown {} to uid {}", dir.path().display(), user.uid),
            ))?;
        }
        let mut pg = LocalPostgres {
            bin,
            run_as,
            port: 0,
            running: false,
            dir,
        };
        pg.initdb()?;
        pg.start_on_a_free_port()?;
        Ok(pg)
    }

    /// `postgres://imctl@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new empty directory inside this server's own, for a test's
    /// `--data-dir` (uploads): removed with the server, so tests leave
    /// nothing behind.
    pub fn scratch_dir(&self) -> Result<PathBuf, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = self.dir.path().join("scratch").join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        Ok(dir)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Creates database `name` (1 to 63 of `a-z`, `0-9`, `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, Error> {
        let valid = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Error::InvalidName(name.to_owned()));
        }
        let createdb = self.client_tool("createdb")?;
        let port = self.port.to_string();
        let mut cmd = self.command(&createdb);
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", USER, name])
            .env("PGCONNECT_TIMEOUT", "10");
        run(cmd, &format!("createdb {name}"), CLIENT_LIMIT)?;
        Ok(self.url(name))
    }

    /// Creates a database with a name unique in this process and returns its URL.
    pub fn fresh_database(&self) -> Result<String, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("t_{}_{n}", std::process::id()))
    }

    /// Stops the server, letting it shut down cleanly; does nothing if stopped.
    pub fn stop(&mut self) {
        if self.running {
            if self.pg_ctl_stop("fast").is_err() {
                let _ = self.pg_ctl_stop("immediate");
            }
            self.running = false;
        }
    }

    /// Stops the server as a crash would (no checkpoint), for recovery tests.
    pub fn kill_hard(&mut self) {
        if self.running {
            let _ = self.pg_ctl_stop("immediate");
            self.running = false;
        }
    }

    /// Also listens on `addr` and trusts clients from `network` (a CIDR,
    /// e.g. `10.231.7.0/24`): for nodes in other network namespaces,
    /// reaching it over a bridge. Restarts the server.
    pub fn listen_also(&mut self, addr: Ipv4Addr, network: &str) -> Result<(), Error> {
        self.append_to_config(&format!("listen_addresses = '127.0.0.1,{addr}'\n"))?;
        let hba = self.data_dir().join("pg_hba.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&hba)
            .and_then(|mut f| f.write_all(format!("host all all {network} trust\n").as_bytes()))
            .map_err(io(format!("write {}", hba.display())))?;
        self.stop();
        self.start_again()
    }

    /// Starts a stopped server again on the same port with the same data;
    /// does nothing if it is running.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if !self.running {
            self.pg_ctl_start()?;
        }
        Ok(())
    }

    fn initdb(&self) -> Result<(), Error> {
        let mut cmd = self.command(&self.bin.join("initdb"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale"])
            // Nothing here needs to survive a power cut.
            .arg("--no-sync");
        run(cmd, "initdb", INITDB_LIMIT)?;
        let settings = format!(
            "\n# Added by imctl: a throwaway server on loopback, durability off.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             full_page_writes = off\n\
             max_connections = 200\n\
             shared_buffers = 128MB\n",
            self.dir.path().display().to_string().replace('\'', "''")
        );
        self.append_to_config(&settings)
    }

    /// Appends to `postgresql.conf`, where a later line overrides an earlier
    /// one. Appending keeps the file's owner, the unprivileged user.
    fn append_to_config(&self, text: &str) -> Result<(), Error> {
        let path = self.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io(format!("write {}", path.display())))
    }

    fn start_on_a_free_port(&mut self) -> Result<(), Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            // Bound and released at once: the server binds it a moment later,
            // and if someone else got there first, we try another.
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map_err(io("find a free port on 127.0.0.1"))?
                .port();
            self.port = port;
            self.append_to_config(&format!("port = {port}\n"))?;
            let log_start = fs::metadata(self.log_path()).map_or(0, |m| m.len());
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = read_from(&self.log_path(), log_start);
                    if tries >= START_TRIES || !log.contains("Address already in use") {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn pg_ctl_start(&mut self) -> Result<(), Error> {
        let log_start = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let wait = PG_CTL_WAIT.to_string();
        let mut cmd = self.command(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &wait, "start"]);
        let what = format!("starting PostgreSQL on port {}", self.port);
        match run(cmd, &what, PG_CTL_LIMIT) {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(e) => {
                // pg_ctl gives up waiting without stopping the server.
                if self.data_dir().join("postmaster.pid").exists() {
                    let _ = self.pg_ctl_stop("immediate");
                }
                // The server log says why; pg_ctl only says to read it.
                let log = read_from(&self.log_path(), log_start);
                Err(match e {
                    Error::Failed { what, status, .. } if !log.trim().is_empty() => Error::Failed {
                        what,
                        status,
                        detail: detail("the server log", &log),
                    },
                    e => e,
                })
            }
        }
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), Error> {
        let wait = PG_CTL_WAIT.to_string();
        let mut cmd = self.command(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", &wait, "stop"]);
        run(cmd, &format!("pg_ctl stop -m {mode}"), PG_CTL_LIMIT).map(drop)
    }

    /// A client program (createdb, psql): Debian keeps the real ones beside
    /// the server's and wrappers in /usr/bin.
    fn client_tool(&self, tool: &'static str) -> Result<PathBuf, Error> {
        let real_bin = fs::canonicalize(self.bin.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let dirs: Vec<PathBuf> = [Some(self.bin.clone()), real_bin, Some("/usr/bin".into())]
            .into_iter()
            .flatten()
            .collect();
        dirs.iter()
            .map(|d| d.join(tool))
            .find(|p| is_executable(p))
            .ok_or_else(|| Error::NoClientTool {
                tool,
                searched: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A command run in the temporary directory, as the unprivileged user
    /// under root. std drops supplementary groups when it sets the uid as
    /// root, as `setpriv --clear-groups` would.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    /// Stops the server at once and deletes its directory, for [`shared`]'s
    /// exit handler, which only has a shared reference.
    fn stop_and_remove(&self) {
        if self.running {
            let _ = self.pg_ctl_stop("immediate");
        }
        let _ = fs::remove_dir_all(self.dir.path());
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        // The data is thrown away, so nothing is lost by not shutting down cleanly.
        self.kill_hard();
    }
}

static SHARED: Mutex<Option<&'static LocalPostgres>> = Mutex::new(None);

/// One server for the whole process, started on first use; each caller
/// creates its own database on it. It is stopped and deleted when the
/// process exits normally (statics are never dropped, so an `atexit` handler
/// does it).
pub fn shared() -> Result<&'static LocalPostgres, Error> {
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(pg) = *slot {
        return Ok(pg);
    }
    let pg: &'static LocalPostgres = Box::leak(Box::new(LocalPostgres::start()?));
    *slot = Some(pg);
    // SAFETY: the handler is a plain function that does not unwind. If it
    // cannot be registered the server outlives the process, which is no
    // reason to refuse the caller a server.
    unsafe { libc::atexit(stop_shared_at_exit) };
    Ok(pg)
}

extern "C" fn stop_shared_at_exit() {
    // Not `lock`: a thread may have exited the process while starting it.
    let slot = match SHARED.try_lock() {
        Ok(slot) => slot,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    if let Some(pg) = *slot {
        pg.stop_and_remove();
    }
}

/// For tests that need PostgreSQL whatever the pass: the [`shared`] server,
/// or `None` when it is missing (see [`or_skip`]).
pub fn shared_or_skip(test: &str) -> Option<&'static LocalPostgres> {
    or_skip(test, shared())
}

/// For tests: the value, or `None` after printing `SKIPPED <test>:
/// PostgreSQL not installed` when it is missing — unless
/// `IMCTL_REQUIRE_POSTGRES=1` (CI), which panics; any other error panics.
pub fn or_skip<T>(test: &str, result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(Error::NotInstalled)
            if std::env::var("IMCTL_REQUIRE_POSTGRES").as_deref() != Ok("1") =>
        {
            // Past the test harness's capture, so it is seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: PostgreSQL not installed"
            );
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Whether tests run against PostgreSQL: `IMCTL_TEST_STORE=postgres` (the
/// suite's second pass); otherwise against SQLite.
pub fn tests_use_postgres() -> bool {
    std::env::var("IMCTL_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// For test harnesses: in the PostgreSQL pass, a new database on the
/// [`shared`] server for one test, as a URL; `None` in the SQLite pass.
/// Panics when the server cannot start: that pass was asked for.
pub fn test_database() -> Option<String> {
    if !tests_use_postgres() {
        return None;
    }
    let db = shared().and_then(LocalPostgres::fresh_database);
    Some(db.unwrap_or_else(|e| panic!("IMCTL_TEST_STORE=postgres: {e}")))
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `$IMCTL_PG_BIN`
/// if set, else the first on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("IMCTL_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = SERVER_TOOLS
            .into_iter()
            .filter(|t| !is_executable(&dir.join(t)))
            .collect();
        if missing.is_empty() {
            return Ok(dir);
        }
        return Err(Error::BadBinDir {
            dir,
            missing: missing.join(", "),
        });
    }
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let versioned = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    on_path
        .into_iter()
        .filter(|d| d.is_absolute())
        .chain(
            newest_first(versioned).map(|v| Path::new("/usr/lib/postgresql").join(v).join("bin")),
        )
        .find(|d| SERVER_TOOLS.iter().all(|t| is_executable(&d.join(t))))
        .ok_or(Error::NotInstalled)
}

/// Version directory names (`15`, `9.6`) newest first, others dropped.
fn newest_first(names: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    let mut versions: Vec<(Vec<u32>, String)> = names
        .filter_map(|n| {
            let v = n
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((v, n))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, n)| n)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Who runs the server's tools: under root, an unprivileged user.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn unprivileged_user() -> Result<Option<RunAs>, Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // Debian's package creates `postgres`; `nobody` is everywhere else.
    ["postgres", "nobody"]
        .into_iter()
        .find_map(lookup_user)
        .map(Some)
        .ok_or(Error::NoUnprivilegedUser)
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let name = CString::new(name).ok()?;
    // SAFETY: a zeroed passwd is a valid out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own, `buf.len()` is its size, and
    // `pwd`'s strings (which we do not read) point into `buf`.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Runs `cmd` to completion, killing it after `limit`, and returns its
/// output. Output goes to an unnamed file rather than pipes, so a chatty
/// tool cannot block and no reader threads are needed.
fn run(mut cmd: Command, what: &str, limit: Duration) -> Result<String, Error> {
    let mut out = tempfile::tempfile().map_err(io("create a temporary file"))?;
    let stdout = out.try_clone().map_err(io("duplicate a file handle"))?;
    let stderr = out.try_clone().map_err(io("duplicate a file handle"))?;
    let program = cmd.get_program().to_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(io(format!("run {}", Path::new(&program).display())))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().map_err(io(format!("wait for {what}")))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::TimedOut {
                    what: what.to_owned(),
                    limit,
                    detail: detail(&output_of(&program), &read_all(&mut out)),
                });
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let output = read_all(&mut out);
    if status.success() {
        Ok(output)
    } else {
        Err(Error::Failed {
            what: what.to_owned(),
            status: status.to_string(),
            detail: detail(&output_of(&program), &output),
        })
    }
}

fn output_of(program: &OsStr) -> String {
    let name = Path::new(program).file_name().unwrap_or(program);
    format!("{}'s output", name.to_string_lossy())
}

fn read_all(file: &mut fs::File) -> String {
    let mut bytes = Vec::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
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
    use std::net::{SocketAddr, TcpStream};

    fn accepts_tcp(port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    }

    /// Runs `select 1` in the database of `url` with psql, over TCP. Trust
    /// authentication lets root in too, so it needs no change of user.
    fn select_one(pg: &LocalPostgres, url: &str) {
        let db = url.rsplit('/').next().unwrap();
        let out = Command::new(pg.client_tool("psql").unwrap())
            .args(["-X", "-At", "-h", "127.0.0.1", "-p", &pg.port().to_string()])
            .args(["-U", USER, "-d", db, "-c", "select 1"])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql on {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    }

    #[test]
    fn databases_on_a_fresh_server_accept_queries() {
        let test = "databases_on_a_fresh_server_accept_queries";
        let Some(pg) = or_skip(test, LocalPostgres::start()) else {
            return;
        };
        let named = pg.create_database("alpha").unwrap();
        let fresh = pg.fresh_database().unwrap();
        assert_eq!(
            named,
            format!("postgres://imctl@127.0.0.1:{}/alpha", pg.port())
        );
        assert_ne!(named, fresh);
        assert!(accepts_tcp(pg.port()));
        select_one(&pg, &named);
        select_one(&pg, &fresh);
        assert!(pg.data_dir().join("PG_VERSION").exists());
        assert!(pg.log_path().exists());
        // Creating it twice is PostgreSQL's error, quoted.
        let again = pg.create_database("alpha").unwrap_err().to_string();
        assert!(again.contains("already exists"), "{again}");
    }

    #[test]
    fn restarts_on_the_same_port_and_drop_leaves_nothing() {
        let test = "restarts_on_the_same_port_and_drop_leaves_nothing";
        let Some(mut pg) = or_skip(test, LocalPostgres::start()) else {
            return;
        };
        let port = pg.port();
        let url = pg.fresh_database().unwrap();

        pg.kill_hard();
        assert!(!accepts_tcp(port));
        pg.start_again().unwrap();
        assert_eq!(pg.port(), port);
        select_one(&pg, &url);

        pg.stop();
        pg.stop();
        assert!(!accepts_tcp(port));
        pg.start_again().unwrap();
        select_one(&pg, &url);

        let dir = pg.data_dir().parent().unwrap().to_owned();
        drop(pg);
        assert!(!accepts_tcp(port));
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }

    #[test]
    fn the_shared_server_is_started_once() {
        let test = "the_shared_server_is_started_once";
        let Some(a) = or_skip(test, shared()) else {
            return;
        };
        let b = shared().unwrap();
        assert!(std::ptr::eq(a, b));
        let (one, two) = (a.fresh_database().unwrap(), b.fresh_database().unwrap());
        assert_ne!(one, two);
        select_one(a, &one);
        select_one(b, &two);
    }

    #[test]
    fn database_names_are_checked_before_anything_runs() {
        let test = "database_names_are_checked_before_anything_runs";
        let Some(pg) = or_skip(test, shared()) else {
            return;
        };
        let too_long = "a".repeat(64);
        for bad in ["", "Alpha", "a-b", "a b", "x;drop", too_long.as_str()] {
            assert!(
                matches!(pg.create_database(bad), Err(Error::InvalidName(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn the_newest_version_directory_comes_first() {
        let names = ["9.6", "15", "lost+found", "13", "10"].map(String::from);
        let order: Vec<String> = newest_first(names.into_iter()).collect();
        assert_eq!(order, ["15", "13", "10", "9.6"]);
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
