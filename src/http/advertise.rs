//! Which host the absolute URLs we hand out carry (`routeUrl`, `wsUrl`,
//! portraits, media, `/config`): `--advertise-host` when given; else the
//! listening address; else, listening on every interface, the host each
//! request was addressed to, so a phone that reached us at `192.168.1.5` and
//! an emulator at `10.0.2.2` both get URLs they can follow.
//!
//! [`Advertise`] is built once from the configuration and shared by both
//! servers; handlers take [`PublicUrls`] as an extractor.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::HOST;
use axum::http::request::Parts;

use crate::store::User;
use crate::wire::http::{ClientSettings, MobileSettings, UserSummary, VueChatSettings};

/// The longest Host header taken as a host (a DNS name is at most 253
/// characters, and a port follows).
const MAX_HOST: usize = 255;

/// How the servers choose the host of the URLs they hand out.
#[derive(Clone, Debug)]
pub struct Advertise(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Every URL carries this host (`--advertise-host`, or the one address
    /// listened on); `None`: the request's Host decides.
    fixed: Option<String>,
    /// The host when a request's is missing or unusable, and where there is
    /// no request (the banner).
    fallback: String,
    app_port: u16,
    broker_port: u16,
}

impl Advertise {
    /// `listen` is `--host`; the ports are the bound ones.
    pub fn new(
        listen: IpAddr,
        advertise_host: Option<&str>,
        app_port: u16,
        broker_port: u16,
    ) -> Self {
        let fixed = match advertise_host {
            Some(host) => Some(host.to_owned()),
            None if listen.is_unspecified() => None,
            None => Some(url_host(listen)),
        };
        let fallback = fixed.clone().unwrap_or_else(|| {
            // Never loopback for a device when the machine has an address.
            let loopback = match listen {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            url_host(machine_address().unwrap_or(loopback))
        });
        Self(Arc::new(Inner {
            fixed,
            fallback,
            app_port,
            broker_port,
        }))
    }

    /// The URLs for a request with this `Host` header.
    pub fn for_request(&self, host_header: Option<&str>) -> PublicUrls {
        let host = match &self.0.fixed {
            Some(h) => h.clone(),
            None => host_header
                .and_then(request_host)
                .unwrap_or_else(|| self.0.fallback.clone()),
        };
        self.urls(host)
    }

    /// The URLs where there is no request: the banner, the OpenAPI servers,
    /// pushes shared by connections that reached us by different names.
    pub fn default_urls(&self) -> PublicUrls {
        self.urls(self.0.fallback.clone())
    }

    /// Whether URLs follow each request's Host (listening on every
    /// interface, no `--advertise-host`).
    pub fn follows_requests(&self) -> bool {
        self.0.fixed.is_none()
    }

    fn urls(&self, host: String) -> PublicUrls {
        PublicUrls {
            host,
            app_port: self.0.app_port,
            broker_port: self.0.broker_port,
        }
    }
}

/// The absolute URLs one client is handed: both servers on the host it can
/// reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrls {
    /// As it goes in a URL: an IPv6 address in brackets.
    host: String,
    app_port: u16,
    broker_port: u16,
}

impl PublicUrls {
    /// The host, as it goes in a URL (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the host is `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// `http://host:port` of the app-server.
    pub fn app_server(&self) -> String {
        format!("http://{}:{}", self.host, self.app_port)
    }

    /// `http://host:port` of the broker.
    pub fn broker(&self) -> String {
        format!("http://{}:{}", self.host, self.broker_port)
    }

    /// The broker's `/route`, handed to clients with every login.
    pub fn route_url(&self) -> String {
        format!("{}/route", self.broker())
    }

    /// The broker's WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}/ws", self.host, self.broker_port)
    }

    pub fn broker_port(&self) -> u16 {
        self.broker_port
    }

    /// A path on the app-server (`/avatar/alice.svg`) made absolute, so
    /// clients on other origins and devices can load it; full URLs pass
    /// through.
    pub fn absolute(&self, url: Option<&str>) -> Option<String> {
        url.map(|u| {
            if u.starts_with('/') {
                format!("{}{u}", self.app_server())
            } else {
                u.to_owned()
            }
        })
    }

    /// A user as clients see it: portrait absolute, mobile kept.
    pub fn summary(&self, user: &User) -> UserSummary {
        UserSummary {
            portrait: self.absolute(user.portrait.as_deref()),
            ..user.summary()
        }
    }

    /// What to paste into the official clients' configuration.
    pub fn client_settings(&self) -> ClientSettings {
        let mobile = MobileSettings {
            app_server_address: self.app_server(),
            im_server_host: self.host.clone(),
        };
        ClientSettings {
            android: mobile.clone(),
            ios: mobile,
            vue_chat: VueChatSettings {
                app_server: self.app_server(),
                im_server_host: self.host.clone(),
                route_port: self.broker_port,
                use_wss: false,
                ws_path: "/ws".into(),
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PublicUrls
where
    Advertise: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok());
        Ok(Advertise::from_ref(state).for_request(host))
    }
}

/// Whether `host` (a port may follow) is `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    request_host(host).is_some_and(|h| {
        let bare = h.trim_start_matches('[').trim_end_matches(']');
        bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

/// An IP address as it goes in a URL.
pub fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    }
}

/// The host of a `Host` header (its port dropped), if it is a plain IP
/// address or DNS name; anything else (a scheme, a path, spaces, an
/// unbracketed IPv6 address, over 255 bytes) is `None`.
pub fn request_host(header: &str) -> Option<String> {
    if header.len() > MAX_HOST {
        return None;
    }
    let (name, port) = match header.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = inside
                .parse()
                .ok()
                .filter(|ip: &Ipv6Addr| !ip.is_unspecified())?;
            (url_host(IpAddr::V6(ip)), after)
        }
        None => {
            let (name, port) = match header.find(':') {
                Some(i) => header.split_at(i),
                None => (header, ""),
            };
            // 0.0.0.0 reaches this machine only from itself: no URL to hand out.
            (plain_host(name).filter(|h| h != "0.0.0.0")?, port)
        }
    };
    match port.strip_prefix(':') {
        None if port.is_empty() => Some(name),
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(name)
        }
        _ => None,
    }
}

/// An IPv4 address or a DNS name (letters, digits and hyphens in labels of
/// at most 63), lower-cased.
fn plain_host(name: &str) -> Option<String> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Some(ip.to_string());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let last = name.rsplit('.').next().unwrap_or_default();
    // A numeric last label would be a mistyped address (`192.168.1.300`).
    let ok = (1..=253).contains(&name.len())
        && name.split('.').all(label_ok)
        && !last.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| name.to_ascii_lowercase())
}

/// `--advertise-host`: a host name or IP address, nothing else; stored as
/// it goes in a URL.
pub fn parse_advertise_host(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    let host = match bare.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => {
            return Err(format!(
                "{s:?} is no address a client can reach: give this machine's LAN address or name, e.g. 192.168.1.5"
            ));
        }
        Ok(ip) => Some(url_host(ip)),
        Err(_) => plain_host(s),
    };
    host.ok_or_else(|| {
        format!(
            "{s:?} is not a host name or IP address: give only the host clients reach this machine by, \
             e.g. 192.168.1.5 or mybox.local (no http://, no :port, no /path)"
        )
    })
}

/// This machine's address on its network, for devices: the source address
/// the kernel picks towards a private-network address (a UDP `connect`
/// sends nothing), else the first address of an interface that is up; never
/// loopback or link-local. `None` when the machine has none.
pub fn machine_address() -> Option<IpAddr> {
    routed_address().or_else(|| interface_addresses().into_iter().find(|ip| usable(*ip)))
}

fn usable(ip: IpAddr) -> bool {
    !ip.is_loopback()
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        }
}

/// The local end of a UDP socket "connected" to a private address: routing
/// only, no packet leaves.
fn routed_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket
        .connect(SocketAddr::from(([10, 255, 255, 255], 9)))
        .ok()?;
    let ip = socket.local_addr().ok()?.ip();
    usable(ip).then_some(ip)
}

/// The addresses of the interfaces that are up, in the system's order.
#[cfg(unix)]
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that we only read, then free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        if up && !ifa.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` is non-null and its family says which sockaddr it is.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))));
                }
                libc::AF_INET6 => {
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(not(unix))]
fn interface_addresses() -> Vec<IpAddr> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_give_plain_hosts_or_nothing() {
        for (header, host) in [
            ("192.168.1.5:8888", "192.168.1.5"),
            ("10.0.2.2", "10.0.2.2"),
            ("MyBox.local:80", "mybox.local"),
            ("[fe80::1]:8888", "[fe80::1]"),
            ("[::1]", "[::1]"),
            ("localhost:1", "localhost"),
        ] {
            assert_eq!(request_host(header).as_deref(), Some(host), "{header}");
        }
        let long = format!("{}.com", "a.".repeat(130));
        for bad in [
            "",
            "http://evil.com",
            "evil.com/path",
            "a b",
            "::1",
            "[::1",
            "[nothost]:1",
            "0.0.0.0:8888",
            "[::]:8888",
            "host:",
            "host:123456",
            "host:12a",
            "-bad-.com",
            "192.168.1.300",
            "a..b",
            "é.com",
            long.as_str(),
        ] {
            assert_eq!(request_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn advertise_host_takes_only_a_host() {
        assert_eq!(parse_advertise_host("192.168.1.5").unwrap(), "192.168.1.5");
        assert_eq!(parse_advertise_host("fd00::5").unwrap(), "[fd00::5]");
        assert_eq!(parse_advertise_host("[fd00::5]").unwrap(), "[fd00::5]");
        assert_eq!(parse_advertise_host("Box.LAN").unwrap(), "box.lan");
        for bad in [
            "http://192.168.1.5",
            "192.168.1.5:8888",
            "box/x",
            "",
            "0.0.0.0",
            "::",
        ] {
            assert!(parse_advertise_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_follows_the_request_and_falls_back_to_a_reachable_host() {
        let a = Advertise::new(Ipv4Addr::UNSPECIFIED.into(), None, 8888, 8083);
        assert!(a.follows_requests());
        let urls = a.for_request(Some("192.168.1.5:9999"));
        assert_eq!(urls.app_server(), "http://192.168.1.5:8888");
        assert_eq!(urls.route_url(), "http://192.168.1.5:8083/route");
        assert_eq!(urls.ws_url(), "ws://192.168.1.5:8083/ws");
        assert_eq!(
            urls.absolute(Some("/avatar/a.svg")).unwrap(),
            "http://192.168.1.5:8888/avatar/a.svg"
        );
        assert_eq!(a.for_request(Some("x y")), a.default_urls());
        assert_eq!(a.for_request(None), a.default_urls());
        if machine_address().is_some() {
            assert!(!a.default_urls().is_loopback());
        }
    }

    #[test]
    fn fixed_hosts_ignore_the_request() {
        let loopback = Advertise::new(Ipv4Addr::LOCALHOST.into(), None, 1, 2);
        assert_eq!(
            loopback.for_request(Some("10.0.2.2:1")).app_server(),
            "http://127.0.0.1:1"
        );
        let set = Advertise::new(Ipv4Addr::UNSPECIFIED.into(), Some("box.lan"), 1, 2);
        assert_eq!(
            set.for_request(Some("10.0.2.2:1")).ws_url(),
            "ws://box.lan:2/ws"
        );
        let one: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            Advertise::new(one, None, 1, 2).default_urls().host(),
            "192.0.2.7"
        );
    }
}
