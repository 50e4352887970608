//! The login flows a client runs against the app-server: SMS (the code read
//! from the dev outbox) and web QR (long-polling until a phone approves).
//! `imctl simulate` and `imctl client` share them.

use std::time::Duration;

use super::app::{AppClient, Failure, exit};
use crate::wire::http::{LoginResult, ScannedResult, UserSummary, code};
use crate::wire::ids::is_valid_mobile;
use crate::wire::ids::now_ms;

/// The server's user list entry for a user id (any case).
pub async fn find_user(client: &AppClient, user: &str) -> anyhow::Result<UserSummary> {
    let users = client.dev_users().await?;
    let known = || {
        users
            .iter()
            .map(|u| u.user_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    users
        .iter()
        .find(|u| u.user_id.eq_ignore_ascii_case(user))
        .cloned()
        .ok_or_else(|| {
            Failure::new(
                exit::ERROR,
                format!(
                    "no user {user:?} on {}; known users: {}",
                    client.base(),
                    known()
                ),
            )
            .into()
        })
}

/// A user id or a mobile → a mobile.
pub async fn resolve_mobile(client: &AppClient, who: &str) -> anyhow::Result<String> {
    if is_valid_mobile(who) {
        return Ok(who.to_owned());
    }
    find_user(client, who).await?.mobile.ok_or_else(|| {
        Failure::new(
            exit::ERROR,
            format!("user {who} has no mobile, so it cannot log in by SMS"),
        )
        .into()
    })
}

/// Requests a code and reads it from the dev outbox. When the resend limit
/// says no, a still-valid code sent earlier is used instead.
pub async fn fetch_code(client: &AppClient, mobile: &str) -> anyhow::Result<String> {
    // What is in the outbox already, by the server's clock: a slow SMS
    // (an injected `sms.delay`) must not be mistaken for an older one.
    let before = client
        .dev_sms(mobile, None, None)
        .await?
        .into_iter()
        .max_by_key(|s| s.sent_at);
    let since = match client.send_code(mobile).await {
        Ok(()) => before.map(|s| s.sent_at),
        Err(e) if e.api_code() == Some(code::SEND_TOO_OFTEN) => {
            let now = now_ms();
            let outbox = client.dev_sms(mobile, None, None).await?;
            return outbox
                .into_iter()
                .find(|s| s.expires_at > now)
                .map(|s| s.code)
                .ok_or_else(|| {
                    anyhow::Error::new(e).context(
                        "a code was requested moments ago and is not in the outbox; wait a minute or pass --code",
                    )
                });
        }
        Err(e) => return Err(e.into()),
    };
    let outbox = client
        .dev_sms(mobile, Some(Duration::from_secs(30)), since)
        .await?;
    outbox
        .into_iter()
        .find(|s| !s.code.is_empty())
        .map(|s| s.code)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the code sent to {mobile} did not appear in {}/_dev/sms within 30 s (is an `sms.delay` fault set? `imctl chaos list`)",
                client.base()
            )
        })
}

/// SMS login exactly as a phone does it: code (given, or from the dev
/// outbox), then `/login`. Returns the result and the `authToken`.
pub async fn sms_login(
    client: &AppClient,
    mobile: &str,
    code: Option<&str>,
    client_id: &str,
    platform: i32,
) -> anyhow::Result<(LoginResult, String)> {
    let code = match code {
        Some(c) => c.to_owned(),
        None => fetch_code(client, mobile).await?,
    };
    Ok(client.login(mobile, &code, client_id, platform).await?)
}

/// The broker's `/route` URL: from the login result, else from `/config`.
pub async fn route_url(client: &AppClient, from_login: Option<String>) -> anyhow::Result<String> {
    match from_login {
        Some(url) => Ok(url),
        None => Ok(client.config().await?.route_url),
    }
}

/// Long-polls `/session_login` until the QR session is confirmed, calling
/// `on_scanned` when a phone scans it. Gives up at `deadline`.
pub async fn wait_qr_login(
    client: &AppClient,
    token: &str,
    deadline: tokio::time::Instant,
    mut on_scanned: impl FnMut(&ScannedResult),
) -> anyhow::Result<(LoginResult, String)> {
    loop {
        let answer = tokio::select! {
            a = client.session_login(token) => a?,
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Failure::new(exit::SESSION_GONE, "gave up: nobody approved the QR login in time").into());
            }
        };
        match answer.code {
            code::SUCCESS => {
                let auth = answer.auth_token.clone().unwrap_or_default();
                let result: LoginResult = answer.parse()?;
                return Ok((result, auth));
            }
            code::SESSION_SCANNED => on_scanned(&answer.parse()?),
            code::SESSION_CANCELLED => {
                return Err(
                    Failure::new(exit::REFUSED, "the login was cancelled on the phone").into(),
                );
            }
            // Only the long poll timed out (the session is live): poll again.
            code::SESSION_EXPIRED if answer.result.is_some() => {}
            code::SESSION_EXPIRED => {
                return Err(Failure::new(
                    exit::SESSION_GONE,
                    format!("the QR session ended: {}", answer.message),
                )
                .into());
            }
            other => {
                return Err(Failure::new(
                    exit::REFUSED,
                    format!("unexpected answer code {other}: {}", answer.message),
                )
                .into());
            }
        }
    }
}
