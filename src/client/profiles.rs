//! Saved phone sessions of `imctl simulate`, keyed by app-server URL and
//! mobile, in a JSON file only the owner can read (it holds authTokens).

use std::path::{Path, PathBuf};

use anyhow::Context;
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

impl Profiles {
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("phones.json");
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!("{} is corrupt; delete it to start over", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
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
        self.write()
    }

    fn write(&self) -> anyhow::Result<()> {
        let dir = self.path.parent().expect("profiles live in a directory");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.file)?;
        write_private(&tmp, text.as_bytes())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
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
}
