//! `imctl.toml`: the `serve` flags as keys (`app-port = 9000`, or
//! `app_port`), plus `[sms.test_codes]`. A file value only fills a setting
//! that neither a flag nor an `IMCTL_*` variable gave, so the precedence is
//! flag > env > file > default. It works by turning the file into the flags
//! it stands for and parsing the command line again with them added.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args};

use super::ServeConfig;

/// The file used when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "imctl.toml";

/// Settings that make no sense in the file itself.
const NOT_IN_FILE: &[&str] = &["config"];

/// One effective setting and where it came from, for `--print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The flag's long name (`app-port`).
    pub name: String,
    pub values: Vec<String>,
    pub source: Source,
    /// A secret: printed as `(set)`.
    pub hidden: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
    Unset,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

fn serve_command() -> clap::Command {
    ServeConfig::augment_args(clap::Command::new("serve"))
}

/// The serve options clap knows, for looking up file keys.
fn serve_args() -> Vec<clap::Arg> {
    serve_command()
        .get_arguments()
        .filter(|a| a.get_long().is_some())
        .cloned()
        .collect()
}

/// Whether a flag or an `IMCTL_*` variable gave `id`.
pub fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The file to read: `--config`/`IMCTL_CONFIG` (must exist; `none` reads
/// no file), else `./imctl.toml` if it exists.
pub fn locate(matches: &ArgMatches) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = matches.get_one::<PathBuf>("config") {
        if p.as_os_str() == "none" {
            return Ok(None);
        }
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("the config file {} does not exist", p.display())
            }
            Err(e) => bail!("cannot read the config file {}: {e}", p.display()),
            Ok(m) if m.is_dir() => bail!(
                "--config {} is a directory; give the path of a TOML file, e.g. {}/{DEFAULT_FILE}",
                p.display(),
                p.display()
            ),
            // A FIFO or device would block the read or never end.
            Ok(m) if !m.is_file() => bail!(
                "--config {} is not a regular file (a pipe or device?); give the path of a TOML file",
                p.display()
            ),
            Ok(_) => {}
        }
        return Ok(Some(p.clone()));
    }
    let default = PathBuf::from(DEFAULT_FILE);
    Ok(default.is_file().then_some(default))
}

/// The flags a config file stands for, keyed by arg id, for the settings the
/// command line and environment left at their defaults.
pub fn flags_from(
    path: &Path,
    matches: &ArgMatches,
) -> anyhow::Result<Vec<(String, Vec<OsString>)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let args = serve_args();
    let command = serve_command();
    let mut out = Vec::new();
    for (key, value) in &table {
        let (id, values) = if key == "sms" {
            ("sms_test_code".to_owned(), sms_section(value, path)?)
        } else if key == "fault" {
            ("fault".to_owned(), fault_section(value, path)?)
        } else {
            let id = key.replace('-', "_");
            let Some(arg) = args
                .iter()
                .find(|a| a.get_id() == id.as_str() && !NOT_IN_FILE.contains(&id.as_str()))
            else {
                let known: Vec<_> = args
                    .iter()
                    .filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
                    .filter_map(|a| a.get_long())
                    .collect();
                bail!(
                    "unknown setting `{key}` in {}; settings are the `imctl serve` flags: {}, and [sms.test_codes]",
                    path.display(),
                    known.join(", ")
                );
            };
            (id, flag_values(arg, key, value, path)?)
        };
        // Given by flag or env, or overruled by a conflicting setting that
        // was (`--ephemeral` beats a file's `data-dir`).
        let overruled = explicit(matches, &id)
            || args
                .iter()
                .find(|a| a.get_id() == id.as_str())
                .is_some_and(|arg| {
                    command
                        .get_arg_conflicts_with(arg)
                        .iter()
                        .any(|other| explicit(matches, other.get_id().as_str()))
                });
        if !overruled && !values.is_empty() {
            let long = id.replace('_', "-");
            let flags = values
                .into_iter()
                .map(|v| match v {
                    None => OsString::from(format!("--{long}")),
                    Some(v) => OsString::from(format!("--{long}={v}")),
                })
                .collect();
            out.push((id, flags));
        }
    }
    Ok(out)
}

/// A key's value as flag values: `None` for a bare switch.
fn flag_values(
    arg: &clap::Arg,
    key: &str,
    value: &toml::Value,
    path: &Path,
) -> anyhow::Result<Vec<Option<String>>> {
    let bad = |what: &str| anyhow::anyhow!("`{key}` in {}: {what}", path.display());
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![None]),
            toml::Value::Boolean(false) => Ok(vec![]),
            _ => Err(bad("expected true or false")),
        };
    }
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(bad("expected a string or a number")),
    };
    match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(|v| scalar(v).map(Some)).collect()
        }
        toml::Value::Array(_) => Err(bad("takes one value, not a list")),
        v => Ok(vec![Some(scalar(v)?)]),
    }
}

/// `[sms.test_codes]` → `MOBILE=CODE` values.
fn sms_section(value: &toml::Value, path: &Path) -> anyhow::Result<Vec<Option<String>>> {
    let bad = || {
        anyhow::anyhow!(
            "[sms] in {} takes one table, test_codes, of \"MOBILE\" = \"CODE\"",
            path.display()
        )
    };
    let table = value.as_table().ok_or_else(bad)?;
    let mut out = Vec::new();
    for (k, v) in table {
        if k != "test_codes" {
            return Err(bad());
        }
        for (mobile, code) in v.as_table().ok_or_else(bad)? {
            let code = match code {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                _ => return Err(bad()),
            };
            out.push(Some(format!("{mobile}={code}")));
        }
    }
    Ok(out)
}

/// `[[fault]]` tables of `rule = "KIND key=value …"` (or a list of rules)
/// → `--fault` values.
fn fault_section(value: &toml::Value, path: &Path) -> anyhow::Result<Vec<Option<String>>> {
    let bad = || {
        anyhow::anyhow!(
            "[[fault]] in {} takes one key, rule = \"KIND key=value …\" (e.g. rule = \"qr.ttl ms=3000\")",
            path.display()
        )
    };
    let items = match value {
        toml::Value::Array(items) => items.as_slice(),
        _ => return Err(bad()),
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(rule) => Ok(Some(rule.clone())),
            toml::Value::Table(t) if t.len() == 1 => match t.get("rule") {
                Some(toml::Value::String(rule)) => Ok(Some(rule.clone())),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        })
        .collect()
}

/// Every serve setting with its value and source, from the final matches.
pub fn settings(matches: &ArgMatches, from_file: &[String]) -> Vec<Setting> {
    serve_args()
        .iter()
        .filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
        .map(|a| {
            let id = a.get_id().as_str();
            let source = if from_file.iter().any(|f| f == id) {
                Source::File
            } else {
                match matches.value_source(id) {
                    Some(ValueSource::CommandLine) => Source::Flag,
                    Some(ValueSource::EnvVariable) => Source::Env,
                    Some(ValueSource::DefaultValue) => Source::Default,
                    _ => Source::Unset,
                }
            };
            let values = if matches!(a.get_action(), ArgAction::SetTrue) {
                vec![matches.get_flag(id).to_string()]
            } else {
                matches
                    .get_raw(id)
                    .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default()
            };
            Setting {
                name: a.get_long().expect("filtered on long").to_owned(),
                values,
                source,
                hidden: a.is_hide_env_values_set(),
            }
        })
        .collect()
}

/// The effective configuration as a TOML file one could use.
pub fn render(settings: &[Setting], file: Option<&Path>) -> String {
    let mut out =
        String::from("# imctl serve: effective configuration (flag > env > file > default)\n");
    if let Some(f) = file {
        out.push_str(&format!("# config file: {}\n", f.display()));
    }
    let mut codes = Vec::new();
    for s in settings {
        let origin = format!("# {}", s.source.name());
        if s.name == "sms-test-code" {
            codes = s.values.clone();
            continue;
        }
        let value = if s.name == "database" && !s.values.is_empty() {
            // The URL is useful to see; its password is not.
            toml_str(&crate::store::mask_password(&s.values[0]))
        } else if s.hidden && !s.values.is_empty() {
            out.push_str(&format!("# {} is set (not shown) {origin}\n", s.name));
            continue;
        } else if s.values.is_empty() {
            out.push_str(&format!("# {} is not set\n", s.name));
            continue;
        } else if s.name == "cors-origin" || s.name == "fault" {
            format!(
                "[{}]",
                s.values
                    .iter()
                    .map(|v| toml_str(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            toml_scalar(&s.values[0])
        };
        out.push_str(&format!("{} = {value}  {origin}\n", s.name));
    }
    out.push_str("\n[sms.test_codes]\n");
    for c in codes {
        if let Some((m, code)) = c.split_once('=') {
            out.push_str(&format!("{} = {}\n", toml_str(m), toml_str(code)));
        }
    }
    out
}

fn toml_scalar(v: &str) -> String {
    let integer = v.parse::<i64>().is_ok_and(|i| i.to_string() == v);
    if v == "true" || v == "false" || integer {
        v.to_owned()
    } else {
        toml_str(v)
    }
}

fn toml_str(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}
