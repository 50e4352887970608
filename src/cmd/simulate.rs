//! `imctl simulate`: the phone (and, with `web-login`, the web page) of a
//! QR login, driven from a terminal or a CI script.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::Failure;
use crate::client::app::exit;
use crate::client::chat_view::printable;
use crate::client::login;
use crate::client::profiles::{PhoneProfile, Profiles, default_state_dir};
use crate::client::{AppClient, ClientError};
use crate::store::now_ms;
use crate::wire::http::{LoginResult, PasswordLoginRequest, PcSessionInfo, PcSessionResult, code};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app-server to talk to
    #[arg(
        long,
        env = "IMCTL_APP_SERVER",
        default_value = "http://127.0.0.1:8888",
        global = true
    )]
    pub app_server: String,

    /// Print one JSON object instead of human output
    #[arg(long, global = true)]
    pub json: bool,

    /// Where saved phone sessions live [default: e.g. ~/.local/state/imctl]
    #[arg(long, env = "IMCTL_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Log a phone in by SMS (code read from the dev outbox) and save its session
    MobileLogin {
        /// The phone's mobile number
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        mobile: Option<String>,
        /// A user id whose mobile to use (e.g. alice)
        #[arg(long)]
        user: Option<String>,
        /// Use this code instead of requesting one (e.g. the super code 66666)
        #[arg(long, conflicts_with = "password")]
        code: Option<String>,
        /// Log in with this password (`/login_pwd`) instead of an SMS code
        #[arg(long, env = "IMCTL_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Scan a QR code: the web page then shows who scanned
    Scan(TargetArgs),
    /// Confirm a scanned QR code: the web page logs in
    Confirm(TargetArgs),
    /// Cancel a scanned QR code: the web page is told it was cancelled
    Cancel(TargetArgs),
    /// Scan (unless already scanned by this phone, as a quick-login request is) then confirm
    Approve(TargetArgs),
    /// Play the web page: show a login QR, long-poll, print the result
    WebLogin {
        /// Also play the phone: scan and confirm as this user (for a one-command smoke test)
        #[arg(long, value_name = "USER|MOBILE")]
        approve_as: Option<String>,
        /// Client id to log in with [default: random]
        #[arg(long)]
        client_id: Option<String>,
        /// Platform number (5 Web, 3 Windows, 4 macOS, 7 Linux)
        #[arg(long, default_value_t = 5)]
        platform: i32,
        /// Device name shown to the phone
        #[arg(long, default_value = "imctl simulate web-login")]
        device_name: String,
        /// Give up after this long [default: when the QR session expires]
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
}

#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// A QR token, the QR text (prefix + token), or an http(s) URL of a QR picture
    #[arg(required_unless_present_any = ["image", "latest"], conflicts_with_all = ["image", "latest"])]
    pub target: Option<String>,
    /// Decode the QR code from a PNG or JPEG screenshot
    #[arg(long, conflicts_with = "latest")]
    pub image: Option<PathBuf>,
    /// The newest live QR session on the server
    #[arg(long)]
    pub latest: bool,
    /// The phone's user: a user id (alice) or a mobile [default: the last phone used with this server]
    #[arg(long = "as", value_name = "USER|MOBILE")]
    pub as_user: Option<String>,
}

/// What the phone does to a QR session.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Scan,
    Confirm,
    Cancel,
    Approve,
}

struct Phone {
    client: AppClient,
    profiles: Profiles,
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = AppClient::new(&args.app_server);
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let mut phone = Phone {
        client,
        profiles: Profiles::load(&state_dir)?,
        json: args.json,
    };
    match args.action {
        Action::MobileLogin {
            mobile,
            user,
            code,
            password,
        } => {
            let mobile = match (mobile, user) {
                (Some(m), _) => m,
                (None, Some(u)) => login::resolve_mobile(&phone.client, &u).await?,
                (None, None) => unreachable!("clap requires one"),
            };
            let p = match password {
                Some(pw) => phone.password_login(&mobile, &pw).await?,
                None => phone.mobile_login(&mobile, code.as_deref()).await?,
            };
            phone.print(
                json!({"userId": p.user_id, "mobile": p.mobile, "displayName": p.display_name}),
                format!(
                    "logged in as {} ({}, {}); session saved",
                    p.user_id,
                    printable(&p.display_name),
                    p.mobile
                ),
            );
            Ok(())
        }
        Action::Scan(t) => phone.act(Step::Scan, t).await,
        Action::Confirm(t) => phone.act(Step::Confirm, t).await,
        Action::Cancel(t) => phone.act(Step::Cancel, t).await,
        Action::Approve(t) => phone.act(Step::Approve, t).await,
        Action::WebLogin {
            approve_as,
            client_id,
            platform,
            device_name,
            timeout,
        } => {
            let client_id =
                client_id.unwrap_or_else(|| format!("imctl-web-{}", crate::token::random_token(4)));
            web_login(
                phone,
                approve_as,
                &client_id,
                platform,
                &device_name,
                timeout,
            )
            .await
        }
    }
}

/// The token inside a QR text: whatever follows the last `/` (so both
/// `imctl://pcsession/T` and `wildfirechat://pcsession/T` work), or the text itself.
pub fn token_from_qr_text(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    let token = text.rsplit('/').next().unwrap_or(text).trim();
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        anyhow::bail!("{text:?} does not look like a QR login token or QR text (prefix + token)");
    }
    Ok(token.to_owned())
}

impl Phone {
    fn print(&self, json: serde_json::Value, human: String) {
        if self.json {
            println!("{json}");
        } else {
            println!("{human}");
        }
    }

    /// SMS login exactly as a phone does it, then saves the session.
    async fn mobile_login(
        &mut self,
        mobile: &str,
        code: Option<&str>,
    ) -> anyhow::Result<PhoneProfile> {
        let client_id = format!("imctl-phone-{mobile}");
        let (result, auth_token) =
            login::sms_login(&self.client, mobile, code, &client_id, 2).await?;
        self.save(mobile, result, auth_token)
    }

    /// Password login (`/login_pwd`) as a phone does it, then saves the session.
    async fn password_login(
        &mut self,
        mobile: &str,
        password: &str,
    ) -> anyhow::Result<PhoneProfile> {
        let req = PasswordLoginRequest {
            mobile: mobile.to_owned(),
            password: password.to_owned(),
            client_id: format!("imctl-phone-{mobile}"),
            platform: 2,
        };
        let answer = self.client.post("/login_pwd", &req, None).await?;
        let auth_token = answer.auth_token.clone();
        let result: LoginResult = answer.ok()?;
        let auth_token = auth_token.context("/login_pwd answered without an authToken header")?;
        self.save(mobile, result, auth_token)
    }

    fn save(
        &mut self,
        mobile: &str,
        result: LoginResult,
        auth_token: String,
    ) -> anyhow::Result<PhoneProfile> {
        let profile = PhoneProfile {
            app_server: self.client.base().to_owned(),
            mobile: mobile.to_owned(),
            user_id: result.user_id,
            display_name: result.user_name.unwrap_or_default(),
            auth_token,
            saved_at: now_ms(),
        };
        self.profiles.save(profile.clone())?;
        Ok(profile)
    }

    /// The saved session of `who` (or of the last phone used), logging in if needed.
    async fn phone_for(&mut self, who: Option<&str>) -> anyhow::Result<PhoneProfile> {
        let base = self.client.base().to_owned();
        let mobile = match who {
            Some(w) => login::resolve_mobile(&self.client, w).await?,
            None => match self.profiles.latest(&base) {
                Some(p) => return Ok(p.clone()),
                None => {
                    return Err(Failure::new(
                        exit::ERROR,
                        format!("no phone has logged in to {base} yet; say which user with --as alice (or --as MOBILE)"),
                    )
                    .into());
                }
            },
        };
        match self.profiles.find(&base, &mobile) {
            Some(p) => Ok(p.clone()),
            None => self.mobile_login(&mobile, None).await,
        }
    }

    /// Finds the session token a target names. With `--latest`, `me` is the
    /// phone's user: a quick-login request bound to it counts as waiting
    /// for approval, and only sessions it scanned wait for its confirmation.
    async fn token_of(
        &self,
        target: &TargetArgs,
        step: Step,
        me: Option<&str>,
    ) -> anyhow::Result<String> {
        if target.latest {
            let sessions = self.client.dev_pc_sessions().await?;
            let scanned_by_me = |s: &PcSessionInfo| {
                (s.status == 1 || s.status == 3)
                    && me.is_none_or(|me| s.scanner.as_ref().is_some_and(|u| u.user_id == me))
            };
            let fresh = |s: &&PcSessionInfo| s.status == 0;
            let mine = |s: &&PcSessionInfo| scanned_by_me(s);
            // Scanning wants a fresh session; confirming or cancelling a
            // scanned one; approving prefers a request addressed to this
            // phone (quick login) over anyone's fresh QR code.
            let found = match step {
                Step::Scan => sessions.iter().find(fresh),
                Step::Approve => sessions
                    .iter()
                    .find(mine)
                    .or_else(|| sessions.iter().find(fresh)),
                Step::Confirm | Step::Cancel => sessions.iter().find(mine),
            };
            let found = found.ok_or_else(|| {
                Failure::new(
                    exit::SESSION_GONE,
                    format!(
                        "no live QR session {} on {}; open the web page or run `imctl simulate web-login` first",
                        match step {
                            Step::Scan => "waiting for a scan",
                            Step::Approve => "waiting for a scan or a quick-login request",
                            Step::Confirm | Step::Cancel => "waiting for this phone's confirmation",
                        },
                        self.client.base()
                    ),
                )
            })?;
            return Ok(found.token.clone());
        }
        if let Some(path) = &target.image {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let text = crate::qr_image::decode(&bytes)
                .with_context(|| format!("cannot read a QR code from {}", path.display()))?;
            return token_from_qr_text(&text);
        }
        let target = target.target.as_deref().expect("clap requires a target");
        if target.starts_with("http://") || target.starts_with("https://") {
            let bytes = self.client.get_bytes(target).await?;
            let text = crate::qr_image::decode(&bytes)
                .with_context(|| format!("cannot read a QR code from {target}"))?;
            return token_from_qr_text(&text);
        }
        token_from_qr_text(target)
    }

    async fn act(&mut self, step: Step, target: TargetArgs) -> anyhow::Result<()> {
        let me = match target.latest {
            true => Some(self.phone_for(target.as_user.as_deref()).await?.user_id),
            false => None,
        };
        let token = self.token_of(&target, step, me.as_deref()).await?;
        let (phone, result) = self
            .run_step(step, target.as_user.as_deref(), &token)
            .await?;
        let done = match step {
            Step::Scan => "scanned",
            Step::Confirm => "confirmed",
            Step::Cancel => "cancelled",
            Step::Approve => "approved",
        };
        self.print(
            json!({"token": token, "status": result.status, "userId": phone.user_id, "action": done}),
            format!("{} ({}) {done} QR session {}…", phone.user_id, printable(&phone.display_name), &token[..token.len().min(8)]),
        );
        Ok(())
    }

    /// Does `step` as `who`, logging in again once if the saved session was
    /// expired or revoked.
    async fn run_step(
        &mut self,
        step: Step,
        who: Option<&str>,
        token: &str,
    ) -> anyhow::Result<(PhoneProfile, PcSessionResult)> {
        let mut phone = self.phone_for(who).await?;
        let result = match self.apply(step, &phone, token).await {
            Err(e) if e.api_code() == Some(code::NOT_LOGGED_IN) => {
                phone = self.mobile_login(&phone.mobile, None).await?;
                self.apply(step, &phone, token).await?
            }
            other => other?,
        };
        Ok((phone, result))
    }

    async fn apply(
        &self,
        step: Step,
        phone: &PhoneProfile,
        token: &str,
    ) -> Result<PcSessionResult, ClientError> {
        let auth = &phone.auth_token;
        match step {
            Step::Scan => self.client.scan_pc(auth, token).await,
            Step::Confirm => self.client.confirm_pc(auth, token, &phone.user_id).await,
            Step::Cancel => self.client.cancel_pc(auth, token).await,
            // A quick-login request (or a session this phone scanned
            // already) needs no scan: confirm, and scan first only when told to.
            Step::Approve => match self.client.confirm_pc(auth, token, &phone.user_id).await {
                Err(e) if e.api_code() == Some(code::SESSION_NOT_SCANNED) => {
                    self.client.scan_pc(auth, token).await?;
                    self.client.confirm_pc(auth, token, &phone.user_id).await
                }
                other => other,
            },
        }
    }
}

async fn web_login(
    mut phone: Phone,
    approve_as: Option<String>,
    client_id: &str,
    platform: i32,
    device_name: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let client = phone.client.clone();
    let session = client.pc_session(client_id, platform, device_name).await?;
    let qr_text = session
        .qr_text
        .clone()
        .unwrap_or_else(|| session.token.clone());
    let token = session.token.clone();
    let started = tokio::time::Instant::now();
    let expires = started + Duration::from_millis(session.expired.max(0) as u64);
    let deadline = timeout.map_or(expires, |t| (started + t).min(expires));

    if !phone.json {
        eprintln!("{}", crate::qr_image::terminal(&qr_text));
        eprintln!("QR text: {qr_text}");
        eprintln!("approve from another terminal:  imctl simulate approve {token} --as alice");
    }

    let json_out = phone.json;
    let approver = approve_as.map(|who| {
        let token = token.clone();
        tokio::spawn(async move {
            phone
                .run_step(Step::Approve, Some(&who), &token)
                .await
                .map(drop)
        })
    });

    let outcome = super::wait_for_qr_login(&client, &token, deadline).await;
    if let Some(task) = approver {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.context("the simulated phone failed to approve")),
            Err(e) => anyhow::bail!("the simulated phone crashed: {e}"),
        }
    }
    let (result, auth_token) = outcome?;
    if json_out {
        let out = json!({
            "userId": result.user_id,
            "userName": result.user_name,
            "token": result.token,
            "authToken": auth_token,
            "clientId": client_id,
        });
        println!("{out}");
    } else {
        println!(
            "logged in as {} ({})",
            result.user_id,
            printable(result.user_name.as_deref().unwrap_or(""))
        );
        println!("IM token:  {}", result.token);
        println!("authToken: {auth_token}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::token_from_qr_text;

    #[test]
    fn tokens_come_out_of_any_prefix() {
        assert_eq!(
            token_from_qr_text("imctl://pcsession/abc123").unwrap(),
            "abc123"
        );
        assert_eq!(
            token_from_qr_text("wildfirechat://pcsession/abc123\n").unwrap(),
            "abc123"
        );
        assert_eq!(token_from_qr_text("abc123").unwrap(), "abc123");
        assert!(token_from_qr_text("imctl://pcsession/").is_err());
        assert!(token_from_qr_text("bad token!").is_err());
    }
}
