//! Which web pages may call the servers: the app-server's CORS answers and
//! the broker's WebSocket Origin check follow this one policy.
//!
//! Wildfire's web clients send credentials, so an allowed origin is reflected
//! exactly with `Access-Control-Allow-Credentials: true`; `*` is never sent.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowHeaders, AllowOrigin, AllowPrivateNetwork, CorsLayer};

use crate::http::advertise::{is_loopback_host, request_host};

/// The pages allowed to call us.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// `--cors-origin`, without trailing slashes.
    extra: Vec<String>,
    /// `--cors-origin '*'`: reflect any origin.
    any: bool,
    /// Listening beyond loopback: pages on private networks and on the
    /// address the request was sent to are allowed too.
    lan: bool,
}

impl Origins {
    pub fn new(cors_origins: &[String], exposed: bool) -> Self {
        let any = cors_origins.iter().any(|o| o.trim() == "*");
        let extra = cors_origins
            .iter()
            .filter(|o| o.trim() != "*")
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Self {
            extra,
            any,
            lan: exposed,
        }
    }

    /// Whether a page on `origin` may call a server reached as `host` (the
    /// request's `Host` header).
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        self.any || self.listed(origin, host)
    }

    /// `allows` without `'*'`: the rule for `/_dev` and `/admin`, whose
    /// answers (SMS codes, QR tokens) no page on the internet may read.
    fn listed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.extra.contains(&origin) {
            return true;
        }
        let Some(name) = origin_host(&origin) else {
            return false;
        };
        if is_loopback_host(name) {
            return true;
        }
        if !self.lan {
            return false;
        }
        // mDNS names only resolve on the local link.
        if name.ends_with(".local") {
            return true;
        }
        let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            // Other names could be pointed anywhere (DNS rebinding).
            return false;
        };
        is_private(ip) || host.and_then(host_ip).is_some_and(|h| h == ip)
    }

    /// The CORS layer of a server; `listed_only` says which of its paths
    /// answer only listed origins, never `'*'` (the app-server's dev and
    /// admin APIs).
    pub fn layer(self: &Arc<Self>, listed_only: fn(&str) -> bool) -> CorsLayer {
        let me = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(
                move |origin: &HeaderValue, parts: &Parts| {
                    let host = parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok());
                    let path = parts.uri.path();
                    let listed = listed_only(path);
                    origin.to_str().is_ok_and(|o| {
                        if listed {
                            me.listed(o, host)
                        } else {
                            me.allows(o, host)
                        }
                    })
                },
            ))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            // Like Wildfire's server, any header the page asks for: clients
            // add their own (tracing ids…); `authToken` and `Content-Type`
            // are the ones the official clients send.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                HeaderName::from_static("authtoken"),
                HeaderName::from_static("x-imctl-fault"),
            ])
            .allow_private_network(AllowPrivateNetwork::yes())
            .max_age(Duration::from_secs(600))
    }
}

/// The host of `scheme://host[:port]`, for http and https origins only.
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        return None;
    }
    Some(match rest.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => rest,
    })
}

/// The IP of a `Host` header (`192.168.1.5:8888`, `[fe80::1]:8888`), if it
/// names one.
fn host_ip(host: &str) -> Option<IpAddr> {
    let name = request_host(host)?;
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Addresses that do not leave a site: RFC 1918, shared (CGNAT, used by
/// overlay VPNs), link-local and unique-local IPv6.
fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_pages_are_allowed_others_need_a_flag() {
        let local = Origins::new(&[], false);
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "http://localhost",
            "http://[::1]:8080",
            "HTTP://LOCALHOST:3000",
        ] {
            assert!(local.allows(ok, None), "{ok}");
        }
        for bad in [
            "http://evil.com",
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io:80",
            "null",
            "file://",
            "http://192.168.1.20:3000",
            "http://printer.local",
            "http://user@localhost:3000",
            "http://app.localhost:3000",
        ] {
            assert!(!local.allows(bad, None), "{bad}");
        }
        let extra = Origins::new(&["https://app.example.com/".into()], false);
        assert!(extra.allows("https://app.example.com", None));
        assert!(!extra.allows("https://app.example.com.evil", None));
    }

    #[test]
    fn beyond_loopback_private_networks_and_our_own_address_are_allowed() {
        let lan = Origins::new(&[], true);
        for ok in [
            "http://192.168.1.20:3000",
            "http://10.0.2.2:8080",
            "http://172.16.5.4",
            "http://169.254.3.3:80",
            "http://100.100.1.2:3000",
            "http://[fd00::1]:3000",
            "http://[fe80::1]:3000",
            "http://mybox.local:3000",
        ] {
            assert!(lan.allows(ok, Some("192.168.1.5:8888")), "{ok}");
        }
        for bad in [
            "http://8.8.8.8",
            "http://172.32.0.1",
            "http://evil.com",
            "http://[2001:db8::1]",
        ] {
            assert!(!lan.allows(bad, Some("192.168.1.5:8888")), "{bad}");
        }
        // A public address is allowed when the page is on the address we were reached at.
        assert!(lan.allows("http://203.0.113.7:3000", Some("203.0.113.7:8888")));
        assert!(!lan.allows("http://203.0.113.7:3000", Some("203.0.113.8:8888")));
        // A name is never trusted by matching Host: rebinding controls both.
        assert!(!lan.allows("http://evil.com:8888", Some("evil.com:8888")));
    }

    #[test]
    fn star_reflects_any_origin_except_to_the_dev_api() {
        let any = Origins::new(&["*".into()], false);
        assert!(any.allows("https://anything.example", None));
        assert!(any.allows("null", None));
        assert!(!any.listed("https://anything.example", None));
        assert!(any.listed("http://localhost:3000", None));
    }
}
