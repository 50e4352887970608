//! A typed client of the app-server's HTTP API.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::wire::http::{
    AUTH_TOKEN_HEADER, CancelPcRequest, ClientConfig, ConfirmPcRequest, FaultAdd, FaultInfo,
    FaultList, FaultsCleared, LoginRequest, LoginResult, PcSessionInfo, PcSessionRequest,
    PcSessionResult, SendCodeRequest, SmsEntry, StackStatus, UserSummary, code,
};
use crate::wire::ws::{RouteRequest, RouteResult};

/// Exit codes of the CLI, by kind of failure (documented in `--help`).
pub mod exit {
    pub const ERROR: u8 = 1;
    /// A wrong flag or setting (clap's own code for usage errors).
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const SESSION_GONE: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// An awaited answer (an ack, enough messages) did not come in time.
    pub const TIMED_OUT: u8 = 6;
}

/// A CLI failure with a chosen exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub exit: u8,
    pub message: String,
}

impl Failure {
    pub fn new(exit: u8, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url} — is `imctl serve` running? ({source})")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the app-server answered code {code}: {message}")]
    Api { code: i32, message: String },
    #[error("{context}: {source}")]
    Http {
        context: String,
        source: reqwest::Error,
    },
    #[error("the app-server refused ({status}): {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer from {path}: {detail}")]
    Protocol { path: String, detail: String },
}

impl ClientError {
    /// The process exit code this failure maps to.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => exit::UNREACHABLE,
            ClientError::Api {
                code: code::SESSION_EXPIRED | code::NOT_FOUND,
                ..
            } => exit::SESSION_GONE,
            ClientError::Api { .. } | ClientError::Status { .. } => exit::REFUSED,
            _ => exit::ERROR,
        }
    }

    /// The login API's result code, if the server answered with one.
    pub fn api_code(&self) -> Option<i32> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A login API answer before its code is judged.
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: i32,
    pub message: String,
    pub result: Option<Value>,
    pub auth_token: Option<String>,
    path: String,
}

impl Answer {
    /// The result of a code-0 answer; any other code becomes `ClientError::Api`.
    pub fn ok<T: DeserializeOwned>(self) -> Result<T> {
        if self.code != code::SUCCESS {
            return Err(ClientError::Api {
                code: self.code,
                message: self.message,
            });
        }
        self.parse()
    }

    /// The result parsed as `T`, whatever the code.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T> {
        serde_json::from_value(self.result.unwrap_or(Value::Null)).map_err(|e| {
            ClientError::Protocol {
                path: self.path,
                detail: e.to_string(),
            }
        })
    }
}

#[derive(Clone)]
pub struct AppClient {
    http: reqwest::Client,
    base: String,
}

impl AppClient {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a plain HTTP client always builds");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn send_error(&self, path: &str, e: reqwest::Error) -> ClientError {
        if !cfg!(feature = "tls") && e.url().is_some_and(|u| u.scheme() == "https") {
            return ClientError::Http {
                context: format!(
                    "{}{path} is https, and this imctl was built without TLS: use the http:// address, or build with `cargo install --path . --features tls`",
                    self.base
                ),
                source: e,
            };
        }
        if e.is_connect() {
            ClientError::Unreachable {
                url: self.base.clone(),
                source: e,
            }
        } else {
            ClientError::Http {
                context: format!("request to {}{path} failed", self.base),
                source: e,
            }
        }
    }

    /// POSTs `body` to a login API path and returns the raw answer.
    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        auth_token: Option<&str>,
    ) -> Result<Answer> {
        self.post_url(&format!("{}{path}", self.base), path, body, auth_token)
            .await
    }

    /// Asks the broker's `/route` (an absolute URL, from the login result)
    /// where to connect.
    pub async fn route(&self, route_url: &str, req: &RouteRequest) -> Result<RouteResult> {
        self.post_url(route_url, "/route", req, None).await?.ok()
    }

    async fn post_url<B: Serialize>(
        &self,
        url: &str,
        path: &str,
        body: &B,
        auth_token: Option<&str>,
    ) -> Result<Answer> {
        let mut req = self.http.post(url).json(body);
        if let Some(t) = auth_token {
            req = req.header(AUTH_TOKEN_HEADER, t);
        }
        let failed = |e: reqwest::Error| {
            if url.starts_with(&self.base) {
                self.send_error(path, e)
            } else if e.is_connect() {
                ClientError::Unreachable {
                    url: url.to_owned(),
                    source: e,
                }
            } else {
                ClientError::Http {
                    context: format!("request to {url} failed"),
                    source: e,
                }
            }
        };
        let resp = req.send().await.map_err(failed)?;
        let auth_token = resp
            .headers()
            .get(AUTH_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = resp.json().await.map_err(failed)?;
        let code =
            body.get("code")
                .and_then(Value::as_i64)
                .ok_or_else(|| ClientError::Protocol {
                    path: path.into(),
                    detail: format!("no code in {body}"),
                })? as i32;
        Ok(Answer {
            code,
            message: body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            result: body.get("result").cloned(),
            auth_token,
            path: path.into(),
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .map_err(|e| self.send_error(path, e))?;
        let resp = resp
            .error_for_status()
            .map_err(|e| self.send_error(path, e))?;
        resp.json().await.map_err(|e| self.send_error(path, e))
    }

    pub async fn send_code(&self, mobile: &str) -> Result<()> {
        self.post(
            "/send_code",
            &SendCodeRequest {
                mobile: mobile.into(),
            },
            None,
        )
        .await?
        .ok::<Option<Value>>()
        .map(drop)
    }

    /// Logs in; returns the result and the `authToken`.
    pub async fn login(
        &self,
        mobile: &str,
        code: &str,
        client_id: &str,
        platform: i32,
    ) -> Result<(LoginResult, String)> {
        let req = LoginRequest {
            mobile: mobile.into(),
            code: code.into(),
            client_id: client_id.into(),
            platform,
        };
        let answer = self.post("/login", &req, None).await?;
        let auth = answer.auth_token.clone();
        let result: LoginResult = answer.ok()?;
        let auth = auth.ok_or_else(|| ClientError::Protocol {
            path: "/login".into(),
            detail: "no authToken header".into(),
        })?;
        Ok((result, auth))
    }

    pub async fn pc_session(
        &self,
        client_id: &str,
        platform: i32,
        device_name: &str,
    ) -> Result<PcSessionResult> {
        let req = PcSessionRequest {
            client_id: client_id.into(),
            platform,
            device_name: Some(device_name.into()),
            ..Default::default()
        };
        self.post("/pc_session", &req, None).await?.ok()
    }

    /// One `/session_login` long poll; the caller judges the code.
    pub async fn session_login(&self, token: &str) -> Result<Answer> {
        self.post(
            &format!("/session_login/{token}"),
            &serde_json::json!({}),
            None,
        )
        .await
    }

    pub async fn scan_pc(&self, auth_token: &str, token: &str) -> Result<PcSessionResult> {
        self.post(
            &format!("/scan_pc/{token}"),
            &serde_json::json!({}),
            Some(auth_token),
        )
        .await?
        .ok()
    }

    pub async fn confirm_pc(
        &self,
        auth_token: &str,
        token: &str,
        user_id: &str,
    ) -> Result<PcSessionResult> {
        let req = ConfirmPcRequest {
            token: token.into(),
            user_id: Some(user_id.into()),
            quick_login: Some(0),
        };
        self.post("/confirm_pc", &req, Some(auth_token)).await?.ok()
    }

    pub async fn cancel_pc(&self, auth_token: &str, token: &str) -> Result<PcSessionResult> {
        self.post(
            "/cancel_pc",
            &CancelPcRequest {
                token: token.into(),
            },
            Some(auth_token),
        )
        .await?
        .ok()
    }

    /// The dev outbox, newest first; with `wait`, waits for a matching SMS.
    pub async fn dev_sms(
        &self,
        mobile: &str,
        wait: Option<Duration>,
        since_ms: Option<i64>,
    ) -> Result<Vec<SmsEntry>> {
        let mut query = vec![("mobile", mobile.to_owned())];
        if let Some(w) = wait {
            query.push(("wait", w.as_secs_f64().to_string()));
        }
        if let Some(s) = since_ms {
            query.push(("since", s.to_string()));
        }
        self.get_json("/_dev/sms", &query).await
    }

    pub async fn dev_pc_sessions(&self) -> Result<Vec<PcSessionInfo>> {
        self.get_json("/_dev/pc_sessions", &[]).await
    }

    /// The first 1,000 users (the most `/_dev/users` answers).
    pub async fn dev_users(&self) -> Result<Vec<UserSummary>> {
        self.get_json("/_dev/users", &[("limit", "1000".to_owned())])
            .await
    }

    /// Calls the admin API; a non-2xx status becomes `ClientError::Status`.
    pub async fn admin(
        &self,
        secret: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-admin-secret", secret);
        if let Some(b) = body {
            req = req.json(b);
        }
        let text = self.admin_text_of(path, req).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET` on the admin API, the body as text: a snapshot is parsed into
    /// its own type, not a `Value` tree (which has a depth limit and costs
    /// a node per number).
    pub async fn admin_get_text(&self, secret: &str, path: &str) -> Result<String> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-admin-secret", secret);
        self.admin_text_of(path, req).await
    }

    async fn admin_text_of(&self, path: &str, req: reqwest::RequestBuilder) -> Result<String> {
        let resp = req.send().await.map_err(|e| self.send_error(path, e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.send_error(path, e))?;
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let message = body["error"].as_str().unwrap_or("no details").to_owned();
            return Err(ClientError::Status {
                status: status.as_u16(),
                message,
            });
        }
        Ok(text)
    }

    /// `GET /_dev/faults`: the fault rules and the newest injections.
    pub async fn dev_faults(&self) -> Result<FaultList> {
        self.get_json("/_dev/faults", &[]).await
    }

    /// `POST /_dev/faults`: adds a fault rule.
    pub async fn dev_fault_add(&self, rule: &str) -> Result<FaultInfo> {
        let req = self
            .http
            .post(format!("{}/_dev/faults", self.base))
            .json(&FaultAdd { rule: rule.into() });
        let text = self.admin_text_of("/_dev/faults", req).await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol {
            path: "/_dev/faults".into(),
            detail: e.to_string(),
        })
    }

    /// `DELETE /_dev/faults[/{id}]`: how many rules went.
    pub async fn dev_faults_clear(&self, id: Option<u64>) -> Result<usize> {
        let path = match id {
            Some(id) => format!("/_dev/faults/{id}"),
            None => "/_dev/faults".into(),
        };
        let req = self.http.delete(format!("{}{path}", self.base));
        let text = self.admin_text_of(&path, req).await?;
        let cleared: FaultsCleared =
            serde_json::from_str(&text).map_err(|e| ClientError::Protocol {
                path,
                detail: e.to_string(),
            })?;
        Ok(cleared.cleared)
    }

    /// `GET /_dev/status`: version, addresses and counts.
    pub async fn dev_status(&self) -> Result<StackStatus> {
        self.get_json("/_dev/status", &[]).await
    }

    /// `GET /readyz` with a short timeout: `Ok` once the stack serves.
    pub async fn readyz(&self) -> Result<()> {
        let resp = self
            .http
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| self.send_error("/readyz", e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(ClientError::Status {
            status: status.as_u16(),
            message: resp.text().await.unwrap_or_default().trim().to_owned(),
        })
    }

    /// `GET /config`: where the broker's `/route` is.
    pub async fn config(&self) -> Result<ClientConfig> {
        self.get_json("/config", &[]).await
    }

    /// Uploads a file to `/media` as the holder of an IM token; returns the
    /// answer (`url`, `size`, `contentType`).
    pub async fn upload(
        &self,
        im_token: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Value> {
        let path = "/media";
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(im_token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .map_err(|e| self.send_error(path, e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::Status {
                status: status.as_u16(),
                message: body["error"].as_str().unwrap_or("no details").to_owned(),
            });
        }
        Ok(body)
    }

    /// Downloads any URL (a QR picture, say).
    pub async fn get_bytes(&self, url: &str) -> Result<Vec<u8>> {
        let failed = |e| ClientError::Http {
            context: format!("cannot download {url}"),
            source: e,
        };
        let resp = self.http.get(url).send().await.map_err(failed)?;
        let resp = resp.error_for_status().map_err(failed)?;
        Ok(resp.bytes().await.map_err(failed)?.to_vec())
    }
}
