//! Bodies of the Wildfire-compatible login API and of imctl's `/_dev` API.
//!
//! Field names follow Wildfire's JSON (camelCase, except `device_name`,
//! `user_id` and `quick_login`, which Wildfire spells with underscores).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Result codes of the login API; the HTTP status is always 200.
pub mod code {
    pub const SUCCESS: i32 = 0;
    pub const INVALID_MOBILE: i32 = 1;
    pub const SEND_TOO_OFTEN: i32 = 3;
    pub const SERVER_ERROR: i32 = 4;
    pub const CODE_EXPIRED: i32 = 5;
    pub const CODE_WRONG: i32 = 6;
    pub const SESSION_EXPIRED: i32 = 8;
    pub const SESSION_SCANNED: i32 = 9;
    pub const SESSION_NOT_SCANNED: i32 = 10;
    pub const NO_ANNOUNCEMENT: i32 = 12;
    pub const NOT_LOGGED_IN: i32 = 13;
    pub const NO_PERMISSION: i32 = 14;
    pub const INVALID_PARAMETER: i32 = 15;
    pub const NOT_FOUND: i32 = 16;
    pub const NAME_TAKEN: i32 = 17;
    pub const SESSION_CANCELLED: i32 = 18;
    pub const PASSWORD_WRONG: i32 = 19;
    pub const TOO_MANY_FAILURES: i32 = 20;
    pub const WEAK_PASSWORD: i32 = 24;
}

/// Name of the header that carries the login session, both ways.
pub const AUTH_TOKEN_HEADER: &str = "authToken";

/// An integer sent as a JSON number or as a numeric string (`"5"`): some
/// Wildfire clients build bodies from form values.
pub fn number_or_numeric_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    match NumberOrText::deserialize(d)? {
        NumberOrText::Number(n) => Ok(n),
        NumberOrText::Text(t) => numeric_text(&t),
    }
}

/// A number as JSON sends it, or as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText<T> {
    Number(T),
    Text(String),
}

/// [`number_or_numeric_string`] for an optional field: absent or `null` is `None`.
pub fn optional_number_or_numeric_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i32>, D::Error> {
    #[derive(Deserialize)]
    struct Number(#[serde(deserialize_with = "number_or_numeric_string")] i32);
    Ok(Option::<Number>::deserialize(d)?.map(|n| n.0))
}

/// A number sent as text, or an error quoting (the start of) the text.
fn numeric_text<T: std::str::FromStr, E: serde::de::Error>(text: &str) -> Result<T, E> {
    text.trim().parse().map_err(|_| {
        E::custom(format!(
            "expected a number, got {:?}",
            text.chars().take(16).collect::<String>()
        ))
    })
}

/// The envelope of every login API answer: `{code, message, result?}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiResponse<T> {
    pub code: i32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
}

impl<T> ApiResponse<T> {
    pub fn ok(result: T) -> Self {
        Self {
            code: code::SUCCESS,
            message: "success".into(),
            result: Some(result),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendCodeRequest {
    pub mobile: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub mobile: String,
    pub code: String,
    pub client_id: String,
    #[serde(deserialize_with = "number_or_numeric_string")]
    #[schema(value_type = i32)]
    pub platform: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResult {
    pub user_id: String,
    /// The IM token the client presents to the broker.
    pub token: String,
    pub register: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portrait: Option<String>,
    /// The broker's `/route` URL; imctl's addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_url: Option<String>,
}

/// `GET /config`: where the rest of the stack is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    pub app_server: String,
    pub route_url: String,
    pub version: String,
    /// The largest WebSocket frame the broker accepts (`--max-frame`).
    #[serde(default)]
    pub max_frame: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PcSessionRequest {
    #[serde(default)]
    pub client_id: String,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    #[schema(value_type = i32)]
    pub platform: i32,
    #[serde(default, rename = "device_name")]
    pub device_name: Option<String>,
    /// A previous session's token; accepted and ignored.
    #[serde(default)]
    pub token: Option<String>,
    /// 1 asks for a quick login: with a valid login session the new session
    /// starts scanned (status 1) by that session's user and the user's
    /// devices get a `pc_login_request` push; without one it is an ordinary
    /// session. 0 or absent: an ordinary session.
    #[serde(default, deserialize_with = "optional_number_or_numeric_string")]
    #[schema(value_type = Option<i32>)]
    pub flag: Option<i32>,
    /// The user the page remembers; ignored (the login session says who).
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A QR session as `/pc_session` and `/scan_pc` return it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PcSessionResult {
    pub token: String,
    pub status: i32,
    /// Milliseconds until the session expires.
    pub expired: i64,
    pub platform: i32,
    #[serde(rename = "device_name")]
    pub device_name: String,
    /// The scanning user, once scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The text the QR code encodes (prefix + token); imctl's addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_text: Option<String>,
}

/// The result of `/session_login` with code 9: who scanned.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScannedResult {
    pub user_id: String,
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portrait: Option<String>,
}

/// The result of `/session_login` with code 8 when only the long poll timed
/// out: the session is live with this status, so poll again. (Code 8 without
/// a result means the session is gone.)
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollTimeout {
    pub status: i32,
}

/// The first event of `GET /pc_session/{token}/events`: the session now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrStatusEvent {
    pub status: i32,
    pub status_name: String,
    pub expires_in_ms: i64,
    /// Who scanned, once scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<ScannedResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfirmPcRequest {
    pub token: String,
    /// Ignored: the logged-in user (who scanned, or whom a quick login is
    /// bound to) is the one who confirms.
    #[serde(default)]
    pub user_id: Option<String>,
    /// 1 when the phone answers a quick-login request; informational.
    #[serde(default, deserialize_with = "optional_number_or_numeric_string")]
    #[schema(value_type = Option<i32>)]
    pub quick_login: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelPcRequest {
    pub token: String,
}

/// One SMS in the dev outbox (`GET /_dev/sms`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmsEntry {
    pub mobile: String,
    pub code: String,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at: i64,
    pub expires_at: i64,
    /// Set when an injected fault (`imctl chaos`) delayed or failed this SMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// One live QR session (`GET /_dev/pc_sessions`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PcSessionInfo {
    pub token: String,
    pub qr_text: String,
    pub status: i32,
    pub status_name: String,
    /// A quick-login request (`flag: 1`): `scanner` is the user it is bound to.
    #[serde(default)]
    pub quick_login: bool,
    pub created_at: i64,
    pub age_ms: i64,
    pub expires_in_ms: i64,
    pub client_id: String,
    pub platform: i32,
    pub device_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<UserSummary>,
}

/// A user as the dev API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSummary {
    pub user_id: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portrait: Option<String>,
}

/// `GET /_dev/status`: what `imctl status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackStatus {
    pub version: String,
    pub pid: u32,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    pub uptime_ms: i64,
    pub app_server: String,
    pub broker: String,
    pub ws_url: String,
    pub route_url: String,
    /// The database file; absent when ephemeral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub users: usize,
    pub connections: usize,
    pub qr_sessions: usize,
    /// What to paste into the official Wildfire clients, on the host this
    /// status was asked for by.
    #[serde(default)]
    pub clients: ClientSettings,
    /// This node and the live ones it knows, when in a cluster (`--nats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    /// Fault rules that may still fire (`imctl chaos`): a stack that
    /// misbehaves on purpose says so.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub faults: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A node's view of its cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    pub nats_connected: bool,
    /// Every live node, this one included, sorted by name.
    pub nodes: Vec<crate::wire::cluster::NodeInfo>,
    /// Pushes for other nodes dropped since the start (NATS slow or down);
    /// their clients get them by `sync`.
    pub dropped_pushes: u64,
}

/// The official Wildfire clients' settings that point them at this stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSettings {
    /// android-chat's `Config.java`.
    pub android: MobileSettings,
    /// ios-chat's `WFCConfig.m` (the same two settings).
    pub ios: MobileSettings,
    /// vue-chat's `config.js`.
    pub vue_chat: VueChatSettings,
}

/// `APP_SERVER_ADDRESS` and `IM_SERVER_HOST`, as android-chat and ios-chat name them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct MobileSettings {
    /// `http://host:port` of the app-server.
    #[serde(rename = "APP_SERVER_ADDRESS")]
    pub app_server_address: String,
    /// The broker's host only: no scheme, no port.
    #[serde(rename = "IM_SERVER_HOST")]
    pub im_server_host: String,
}

/// vue-chat's `config.js` settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct VueChatSettings {
    #[serde(rename = "APP_SERVER")]
    pub app_server: String,
    #[serde(rename = "IM_SERVER_HOST")]
    pub im_server_host: String,
    /// The broker's port, where `/route` answers.
    #[serde(rename = "ROUTE_PORT")]
    pub route_port: u16,
    #[serde(rename = "USE_WSS")]
    pub use_wss: bool,
    #[serde(rename = "WS_PATH")]
    pub ws_path: String,
}

/// One event of `GET /_dev/feed`: everything the dev dashboard shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevSnapshot {
    pub status: StackStatus,
    /// Newest first, at most 50.
    pub sms: Vec<SmsEntry>,
    pub pc_sessions: Vec<PcSessionInfo>,
    pub connections: Vec<ConnInfo>,
    /// Newest first, at most 50.
    pub messages: Vec<crate::wire::ws::ChatMessage>,
    pub users: Vec<UserSummary>,
    /// The fault rules (`imctl chaos`), oldest first; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultInfo>,
    /// Injected faults, newest first, at most 50; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injected: Vec<InjectedInfo>,
}

/// `POST /_dev/faults`: one rule, `KIND key=value …` (docs/CHAOS.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaultAdd {
    #[schema(example = "api.code path=/session_login code=18 times=1")]
    pub rule: String,
}

/// A fault rule and how it stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultInfo {
    pub id: u64,
    /// The rule in its canonical form (a `p=` rule shows its seed).
    pub rule: String,
    pub kind: String,
    /// How often it fired.
    pub fired: u64,
    /// Fires left, when it has a count (`times=`, or 1 for one-shot kinds).
    pub remaining: Option<u32>,
    /// Milliseconds left, when it has a window (`for=`).
    pub remaining_ms: Option<u64>,
    /// Fires no more (count used up or window over); kept for the record.
    pub spent: bool,
    /// Milliseconds since the epoch.
    pub added_at: i64,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjectedInfo {
    /// Milliseconds since the epoch.
    pub at: i64,
    /// The rule that fired.
    pub id: u64,
    pub kind: String,
    pub detail: String,
}

/// `GET /_dev/faults`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaultList {
    pub rules: Vec<FaultInfo>,
    /// Newest first, at most 100.
    pub injected: Vec<InjectedInfo>,
}

/// `DELETE /_dev/faults[/{id}]`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FaultsCleared {
    pub cleared: usize,
}

/// A live WebSocket connection, as the admin API and the dashboard list it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnInfo {
    pub user_id: String,
    pub client_id: String,
    pub platform: i32,
    /// Milliseconds since the epoch.
    pub since: i64,
    /// The node holding it, in a cluster (`--nats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `POST /_dev/pc_sessions/{token}/{action}`: who plays the phone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevPhoneAction {
    pub user_id: String,
}

/// No result: `ApiResponse<Empty>` is `{code, message}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Empty {}

/// `POST /media`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Uploaded {
    /// Where to fetch it; put it in an image, file or video message.
    pub url: String,
    pub size: i64,
    pub content_type: String,
}

/// The JSON error body of imctl's own (non-Wildfire) endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DevError {
    pub error: String,
}

/// An integer sent as a JSON number, a numeric string or `null` (read as 0):
/// Wildfire clients send message uids and favorite ids either way.
pub fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Option::<NumberOrText<i64>>::deserialize(d)? {
        None => Ok(0),
        Some(NumberOrText::Number(n)) => Ok(n),
        Some(NumberOrText::Text(t)) if t.trim().is_empty() => Ok(0),
        Some(NumberOrText::Text(t)) => numeric_text(&t),
    }
}

/// A string that may be sent as `null` (read as empty).
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// `/login`'s answer: a login plus a one-time code to set a password with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmsLoginResult {
    #[serde(flatten)]
    pub login: LoginResult,
    /// Six digits that let `/reset_pwd` set a password without another SMS;
    /// valid 10 minutes, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_code: Option<String>,
}

/// `/send_reset_code`: the mobile, or none for the logged-in user's own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SendResetCodeRequest {
    #[serde(default)]
    pub mobile: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetPasswordRequest {
    /// Whose password; without it, the logged-in user's.
    #[serde(default)]
    pub mobile: Option<String>,
    pub reset_code: String,
    pub new_password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordRequest {
    pub old_password: String,
    pub new_password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordLoginRequest {
    pub mobile: String,
    pub password: String,
    pub client_id: String,
    #[serde(deserialize_with = "number_or_numeric_string")]
    #[schema(value_type = i32)]
    pub platform: i32,
}

/// `/change_name`: the new display name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeNameRequest {
    pub new_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DestroyRequest {
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PutAnnouncementRequest {
    pub group_id: String,
    /// Ignored: the logged-in user is the author.
    #[serde(default)]
    pub author: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetAnnouncementRequest {
    pub group_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupAnnouncement {
    pub group_id: String,
    pub author: String,
    pub text: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// A favorite as `/fav/add` takes it and `/fav/list` gives it back. Every
/// string is present (empty rather than missing): Android's parser throws
/// on a missing key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FavoriteItem {
    /// Set by the server.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub id: i64,
    /// Set by the server: the owner.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub user_id: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub message_uid: i64,
    /// The kept message's content type (1 text, 3 image …).
    #[serde(rename = "type", deserialize_with = "lenient_i64")]
    pub kind: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub conv_type: i64,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub conv_target: String,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub conv_line: i64,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub origin: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub sender: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub title: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub url: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub thumb_url: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data: String,
    /// Set by the server: when it was kept (ms since the epoch).
    #[serde(default, deserialize_with = "lenient_i64")]
    pub timestamp: i64,
}

/// `/fav/list`: the page before `id` (0: the newest), `count` items.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FavoriteListRequest {
    #[serde(default, deserialize_with = "lenient_i64")]
    pub id: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FavoriteList {
    /// Newest first.
    pub items: Vec<FavoriteItem>,
    pub has_more: bool,
}

/// `/fav/add`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FavoriteAdded {
    pub id: i64,
}

/// `GET /version/check`'s query; every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct VersionCheckQuery {
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub current_version: Option<String>,
    #[serde(default)]
    pub build_number: Option<String>,
}

/// `GET /version/check`'s answer: imctl never offers an update.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCheck {
    pub need_update: bool,
    pub force_update: bool,
    /// The version the client runs.
    pub latest_version: String,
    pub build_number: String,
    pub url: String,
    pub description: String,
}

/// `GET /avatar?name=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct AvatarQuery {
    #[serde(default)]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_is_a_number_or_a_numeric_string() {
        let body = |p: &str| {
            format!(r#"{{"mobile":"13900000000","code":"1","clientId":"c","platform":{p}}}"#)
        };
        for (sent, want) in [("5", 5), ("\"5\"", 5), ("\" 2 \"", 2)] {
            let r: LoginRequest = serde_json::from_str(&body(sent)).unwrap();
            assert_eq!(r.platform, want, "{sent}");
        }
        for bad in ["\"web\"", "null", "5.5", "\"\""] {
            assert!(
                serde_json::from_str::<LoginRequest>(&body(bad)).is_err(),
                "{bad}"
            );
        }
        let pc: PcSessionRequest =
            serde_json::from_str(r#"{"clientId":"c","platform":"3","extra":1}"#).unwrap();
        assert_eq!((pc.platform, pc.flag), (3, None));
        let pc: PcSessionRequest =
            serde_json::from_str(r#"{"clientId":"c","platform":5,"flag":"1"}"#).unwrap();
        assert_eq!(pc.flag, Some(1));
        for (sent, want) in [("1", Some(1)), ("\"0\"", Some(0)), ("null", None)] {
            let c: ConfirmPcRequest =
                serde_json::from_str(&format!(r#"{{"token":"t","quick_login":{sent}}}"#)).unwrap();
            assert_eq!(c.quick_login, want, "{sent}");
        }
        assert!(
            serde_json::from_str::<ConfirmPcRequest>(r#"{"token":"t","quick_login":"yes"}"#)
                .is_err()
        );
    }
}
