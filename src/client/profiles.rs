//! State the CLI keeps between runs, in JSON files only the owner can read
//! (they hold tokens): phone sessions of `imctl simulate` (`phones.json`),
//! keyed by app-server URL and mobile, and the chat sessions of
//! `imctl client` (`clients.json`), keyed by app-server URL and user.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneProfile {
    pub app_server: String,
    pub mobile: String,
    pub user_id: String,
    pub display_name: String,
    pub auth_token: String,
    /// Milliseconds since the epoch.
    pub saved_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    phones: Vec<PhoneProfile>,
}

pub struct Profiles {
    path: PathBuf,
    file: File,
}

/// Where the CLI keeps its state when neither `--state-dir` nor
/// `IMCTL_STATE_DIR` says otherwise (e.g. ~/.local/state/imctl).
pub fn default_state_dir() -> PathBuf {
    directories::ProjectDirs::from("dev", "imctl", "imctl")
        .map(|d| d.state_dir().unwrap_or(d.data_local_dir()).to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".imctl"))
}

/// Reads a state file; a missing file is the default value.
fn load_json<T: DeserializeOwned + Default>(path: &Path) -> anyhow::Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt; delete it to start over", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a state file atomically (temp file + rename), readable only by its owner.
fn save_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let dir = path.parent().expect("state files live in a directory");
    crate::files::create_private_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // A temp name of our own: two processes saving at once must not share it.
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let text = serde_json::to_string_pretty(value)?;
    write_private(&tmp, text.as_bytes())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

impl Profiles {
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("phones.json");
        let file = load_json(&path)?;
        Ok(Self { path, file })
    }

    pub fn find(&self, app_server: &str, mobile: &str) -> Option<&PhoneProfile> {
        self.file
            .phones
            .iter()
            .find(|p| p.app_server == app_server && p.mobile == mobile)
    }

    /// The most recently saved phone for this app-server.
    pub fn latest(&self, app_server: &str) -> Option<&PhoneProfile> {
        self.file
            .phones
            .iter()
            .filter(|p| p.app_server == app_server)
            .max_by_key(|p| p.saved_at)
    }

    /// Replaces the profile for the same server and mobile, then writes the file.
    pub fn save(&mut self, profile: PhoneProfile) -> anyhow::Result<()> {
        self.file
            .phones
            .retain(|p| !(p.app_server == profile.app_server && p.mobile == profile.mobile));
        self.file.phones.push(profile);
        save_json(&self.path, &self.file)
    }
}

/// A chat client's saved login: enough to reconnect without logging in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientSession {
    pub app_server: String,
    pub user_id: String,
    #[serde(default)]
    pub mobile: Option<String>,
    /// Kept across logins so the server sees one device.
    pub client_id: String,
    pub platform: i32,
    pub im_token: String,
    #[serde(default)]
    pub auth_token: Option<String>,
    pub route_url: String,
    /// The highest inbox seq this device has shown; the next start syncs from here.
    #[serde(default)]
    pub last_seq: i64,
    /// Milliseconds since the epoch.
    pub saved_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ClientsFile {
    clients: Vec<ClientSession>,
}

/// The saved sessions of `imctl client`.
pub struct ClientSessions {
    path: PathBuf,
    file: ClientsFile,
}

impl ClientSessions {
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("clients.json");
        let file = load_json(&path)?;
        Ok(Self { path, file })
    }

    /// The saved session of `who` (a user id, any case, or a mobile) on this app-server.
    pub fn find(&self, app_server: &str, who: &str) -> Option<&ClientSession> {
        self.file.clients.iter().find(|c| {
            c.app_server == app_server
                && (c.user_id.eq_ignore_ascii_case(who) || c.mobile.as_deref() == Some(who))
        })
    }

    /// Replaces the session for the same server and user, then writes the file.
    /// Re-reads the file first so several clients of different users can share it.
    pub fn save(&mut self, session: ClientSession) -> anyhow::Result<()> {
        // Two clients (alice and bob in two terminals) save into one file:
        // read-modify-write under an advisory lock so neither loses the other's update.
        if let Some(dir) = self.path.parent() {
            crate::files::create_private_dir(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock_path = self.path.with_extension("lock");
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        self.file = load_json(&self.path)?;
        self.file
            .clients
            .retain(|c| !(c.app_server == session.app_server && c.user_id == session.user_id));
        self.file.clients.push(session);
        save_json(&self.path, &self.file)
    }
}

/// Creates an empty file (and its directory) only its owner can read.
pub fn create_private(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        crate::files::create_private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_private(path, b"").with_context(|| format!("cannot create {}", path.display()))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(server: &str, mobile: &str, at: i64) -> PhoneProfile {
        PhoneProfile {
            app_server: server.into(),
            mobile: mobile.into(),
            user_id: "u".into(),
            display_name: "U".into(),
            auth_token: format!("t{at}"),
            saved_at: at,
        }
    }

    #[test]
    fn saves_replaces_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Profiles::load(dir.path()).unwrap();
        assert!(p.latest("http://a").is_none());
        p.save(phone("http://a", "13800000001", 1)).unwrap();
        p.save(phone("http://a", "13800000002", 2)).unwrap();
        p.save(phone("http://a", "13800000001", 3)).unwrap();
        p.save(phone("http://b", "13800000001", 4)).unwrap();
        let p = Profiles::load(dir.path()).unwrap();
        assert_eq!(p.find("http://a", "13800000001").unwrap().auth_token, "t3");
        assert_eq!(p.latest("http://a").unwrap().mobile, "13800000001");
        assert_eq!(p.file.phones.len(), 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("phones.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn client_sessions_are_found_by_user_or_mobile() {
        let dir = tempfile::tempdir().unwrap();
        let session = |user: &str, seq| ClientSession {
            app_server: "http://a".into(),
            user_id: user.into(),
            mobile: Some("13800000001".into()),
            client_id: "c".into(),
            platform: 7,
            im_token: "t".into(),
            auth_token: None,
            route_url: "http://a/route".into(),
            last_seq: seq,
            saved_at: 1,
        };
        let mut a = ClientSessions::load(dir.path()).unwrap();
        let mut b = ClientSessions::load(dir.path()).unwrap();
        a.save(session("alice", 1)).unwrap();
        // A second process saving another user keeps alice.
        b.save(session("bob", 2)).unwrap();
        a.save(session("alice", 5)).unwrap();
        let c = ClientSessions::load(dir.path()).unwrap();
        assert_eq!(c.find("http://a", "ALICE").unwrap().last_seq, 5);
        assert_eq!(c.find("http://a", "bob").unwrap().last_seq, 2);
        assert!(c.find("http://b", "alice").is_none());
        assert_eq!(c.file.clients.len(), 2);
    }
}
