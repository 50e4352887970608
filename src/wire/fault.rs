//! `imctl chaos` fault-injection rules, written `KIND key=value …`: one text
//! syntax for the CLI, the config file and the HTTP API, so a rule printed by
//! one can be pasted into another. Users script these, so names are stable.

use std::{fmt, ops::RangeInclusive, str::FromStr, time::Duration};

/// What a rule breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ApiCode,
    ApiHttp,
    ApiDelay,
    ApiHang,
    ApiCut,
    QrExpire,
    QrTtl,
    SmsDelay,
    SmsFail,
    WsClose,
    WsReset,
    WsFreeze,
    WsDelayPushes,
    WsDropPushes,
    WsFailAck,
    WsRefuseConnect,
    RouteDead,
}

impl Kind {
    /// Every kind, in the order help text lists them.
    pub const ALL: [Kind; 17] = [
        Kind::ApiCode,
        Kind::ApiHttp,
        Kind::ApiDelay,
        Kind::ApiHang,
        Kind::ApiCut,
        Kind::QrExpire,
        Kind::QrTtl,
        Kind::SmsDelay,
        Kind::SmsFail,
        Kind::WsClose,
        Kind::WsReset,
        Kind::WsFreeze,
        Kind::WsDelayPushes,
        Kind::WsDropPushes,
        Kind::WsFailAck,
        Kind::WsRefuseConnect,
        Kind::RouteDead,
    ];

    /// The name users write; part of the scripted interface.
    pub fn name(self) -> &'static str {
        self.row().0
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Kinds that describe a condition (last until cleared when no trigger is
    /// given): api.delay, qr.ttl, sms.delay, ws.delay-pushes, ws.drop-pushes,
    /// ws.refuse-connect. All others default to times=1.
    pub fn lasting(self) -> bool {
        use Kind::*;
        matches!(
            self,
            ApiDelay | QrTtl | SmsDelay | WsDelayPushes | WsDropPushes | WsRefuseConnect
        )
    }

    /// One-line description for help text.
    pub fn about(self) -> &'static str {
        self.row().1
    }

    /// The keys this kind needs, then the scope keys it may also take (the
    /// trigger keys go with every kind).
    fn keys(self) -> (&'static [Key], &'static [Key]) {
        use Key::*;
        const API: &[Key] = &[User, Mobile, Token, Client, Platform];
        const CONN: &[Key] = &[User, Client, Platform];
        match self {
            Kind::ApiCode => (&[Path, Code], API),
            Kind::ApiHttp => (&[Path, Status], API),
            Kind::ApiDelay => (&[Path, Ms], API),
            Kind::ApiHang => (&[Path], &[User, Mobile, Token, Client, Platform, Ms]),
            Kind::ApiCut => (&[Path], API),
            Kind::QrExpire => (&[], &[Token, Client, Platform]),
            Kind::QrTtl => (&[Ms], &[Token, Client, Platform]),
            Kind::SmsDelay => (&[Ms], &[Mobile]),
            Kind::SmsFail => (&[], &[Mobile]),
            Kind::WsClose => (&[], &[User, Client, Platform, Code]),
            Kind::WsFreeze => (&[For], CONN),
            Kind::WsDelayPushes => (&[Ms], CONN),
            Kind::WsFailAck => (&[], &[User, When]),
            Kind::WsReset | Kind::WsDropPushes | Kind::WsRefuseConnect => (&[], CONN),
            Kind::RouteDead => (&[], &[User]),
        }
    }

    fn row(self) -> (&'static str, &'static str) {
        match self {
            Kind::ApiCode => ("api.code", "answer the API call with a Wildfire code"),
            Kind::ApiHttp => ("api.http", "answer the API call with an HTTP status"),
            Kind::ApiDelay => ("api.delay", "answer the API call ms late"),
            Kind::ApiHang => ("api.hang", "never answer the API call (or ms late)"),
            Kind::ApiCut => ("api.cut", "drop the API call's connection unanswered"),
            Kind::QrExpire => ("qr.expire", "expire the QR login session now"),
            Kind::QrTtl => ("qr.ttl", "make QR login sessions last ms"),
            Kind::SmsDelay => ("sms.delay", "send SMS codes ms late"),
            Kind::SmsFail => ("sms.fail", "fail sending the SMS code"),
            Kind::WsClose => ("ws.close", "close the WebSocket with code (default 4009)"),
            Kind::WsReset => ("ws.reset", "reset the WebSocket's TCP connection"),
            Kind::WsFreeze => ("ws.freeze", "stop all WebSocket traffic for a while"),
            Kind::WsDelayPushes => ("ws.delay-pushes", "deliver pushes ms late"),
            Kind::WsDropPushes => ("ws.drop-pushes", "drop pushes instead of delivering"),
            Kind::WsFailAck => ("ws.fail-ack", "fail a send before or after its commit"),
            Kind::WsRefuseConnect => ("ws.refuse-connect", "refuse new WebSocket connections"),
            Kind::RouteDead => ("route.dead", "route the user to a node that never answers"),
        }
    }

    fn takes(self, key: Key) -> bool {
        let (needs, may) = self.keys();
        Key::TRIGGERS.contains(&key) || needs.contains(&key) || may.contains(&key)
    }
}

/// Which token a rule applies to; `Latest` follows the newest one issued, so
/// scripts need not know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Exact(String),
    Latest,
}

/// What a rule matches; an unset field matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    pub path: Option<String>,
    pub user: Option<String>,
    pub mobile: Option<String>,
    pub token: Option<TokenScope>,
    pub client: Option<String>,
    pub platform: Option<i32>,
}

/// When ws.fail-ack fails, relative to the message's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckWhen {
    Before,
    After,
}

/// One fault, as parsed from `KIND key=value …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub kind: Kind,
    pub scope: Scope,
    /// Trigger: fire on at most this many matches.
    pub times: Option<u32>,
    /// Trigger: fire on matches within this long after the rule is added
    /// (`for=`), except for ws.freeze where `for=` is the freeze length
    /// (stored in `freeze`).
    pub window: Option<Duration>,
    /// Trigger: each match fires with this probability…
    pub p: Option<f64>,
    /// …drawn from a generator seeded with this (`seed=`; only with `p`).
    pub seed: Option<u64>,
    /// api.code: the Wildfire code to answer; ws.close: the WebSocket close code.
    pub code: Option<i32>,
    /// api.http: the HTTP status.
    pub status: Option<u16>,
    /// api.delay, api.hang (optional cap), qr.ttl, sms.delay, ws.delay-pushes:
    /// milliseconds.
    pub ms: Option<u64>,
    /// ws.freeze: how long the connection stays frozen.
    pub freeze: Option<Duration>,
    /// ws.fail-ack: before or after the commit (default After).
    pub when: Option<AckWhen>,
}

/// A rule that does not parse: `part` is the word or key at fault, `why`
/// says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {why}")]
pub struct RuleError {
    pub part: String,
    pub why: String,
}

type Res<T> = Result<T, RuleError>;

fn err(part: &str, why: impl Into<String>) -> RuleError {
    RuleError {
        part: part.into(),
        why: why.into(),
    }
}

const MAX_RULE: usize = 1024;
const MAX_VALUE: usize = 256;
const MAX_MS: u64 = 600_000;
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
const MAX_FREEZE: Duration = Duration::from_secs(600);

const WHENS: [(&str, AckWhen); 2] = [("before", AckWhen::Before), ("after", AckWhen::After)];

/// Keys in the order Display prints them, so the canonical text is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Path,
    User,
    Mobile,
    Client,
    Platform,
    Token,
    Code,
    Status,
    Ms,
    For,
    When,
    Times,
    P,
    Seed,
}

impl Key {
    const ALL: [Key; 14] = {
        use Key::*;
        [
            Path, User, Mobile, Client, Platform, Token, Code, Status, Ms, For, When, Times, P,
            Seed,
        ]
    };
    const TRIGGERS: [Key; 4] = [Key::For, Key::Times, Key::P, Key::Seed];

    fn name(self) -> &'static str {
        const NAMES: [&str; 14] = [
            "path", "user", "mobile", "client", "platform", "token", "code", "status", "ms", "for",
            "when", "times", "p", "seed",
        ];
        NAMES[self as usize]
    }

    fn from_name(s: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == s)
    }
}

fn names(keys: impl IntoIterator<Item = Key>) -> String {
    keys.into_iter()
        .map(Key::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `v` and checks it with `ok`; `form` tells the user what fits.
fn value<T: FromStr>(word: &str, v: &str, form: &str, ok: impl Fn(&T) -> bool) -> Res<T> {
    v.parse()
        .ok()
        .filter(ok)
        .ok_or_else(|| err(word, format!("expected {form}")))
}

fn int<T>(word: &str, v: &str, range: RangeInclusive<T>) -> Res<T>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    let form = format!("an integer {}..={}", range.start(), range.end());
    value(word, v, &form, |n| range.contains(n))
}

fn duration(word: &str, v: &str, max: Duration) -> Res<Duration> {
    let form = format!("a duration like 500ms, 10s or 2m, 1ms to {}", show(max));
    humantime::parse_duration(v)
        .ok()
        .filter(|d| (Duration::from_millis(1)..=max).contains(d))
        .ok_or_else(|| err(word, format!("expected {form}")))
}

/// humantime's text without its spaces ("1m30s"): a value must be one word.
fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

impl Rule {
    /// A rule of `kind` with nothing else set.
    pub fn new(kind: Kind) -> Rule {
        Rule {
            kind,
            scope: Scope::default(),
            times: None,
            window: None,
            p: None,
            seed: None,
            code: None,
            status: None,
            ms: None,
            freeze: None,
            when: None,
        }
    }

    /// Stores one checked value; `word` is the `key=value` for errors.
    fn set(&mut self, key: Key, word: &str, v: &str) -> Res<()> {
        let text = || Some(v.to_string());
        match key {
            Key::Path if !v.starts_with('/') => {
                return Err(err(word, "expected a path starting with /"));
            }
            Key::Path => self.scope.path = text(),
            Key::User => self.scope.user = text(),
            Key::Mobile => self.scope.mobile = text(),
            Key::Client => self.scope.client = text(),
            Key::Platform => self.scope.platform = Some(int(word, v, 0..=99)?),
            Key::Token if v == "latest" => self.scope.token = Some(TokenScope::Latest),
            Key::Token => self.scope.token = Some(TokenScope::Exact(v.to_string())),
            Key::Code if self.kind == Kind::WsClose => {
                let ok = |c: &i32| *c == 1000 || (3000..=4999).contains(c);
                self.code = Some(value(word, v, "a close code: 1000 or 3000..=4999", ok)?)
            }
            Key::Code => self.code = Some(int(word, v, 1..=999)?),
            Key::Status => self.status = Some(int(word, v, 400..=599)?),
            Key::Ms => self.ms = Some(int(word, v, 1..=MAX_MS)?),
            Key::For if self.kind == Kind::WsFreeze => {
                self.freeze = Some(duration(word, v, MAX_FREEZE)?)
            }
            Key::For => self.window = Some(duration(word, v, MAX_WINDOW)?),
            Key::When => {
                let when = WHENS.iter().find(|w| w.0 == v).map(|w| w.1);
                self.when = Some(when.ok_or_else(|| err(word, "expected before or after"))?)
            }
            Key::Times => self.times = Some(int(word, v, 1..=1_000_000)?),
            Key::P => {
                self.p = Some(value(word, v, "a probability 0 < p <= 1, e.g. 0.1", |p| {
                    *p > 0.0 && *p <= 1.0
                })?)
            }
            Key::Seed => self.seed = Some(value(word, v, "an unsigned 64-bit integer", |_| true)?),
        }
        Ok(())
    }

    /// The value Display prints for `key`, if set.
    fn get(&self, key: Key) -> Option<String> {
        let s = &self.scope;
        match key {
            Key::Path => s.path.clone(),
            Key::User => s.user.clone(),
            Key::Mobile => s.mobile.clone(),
            Key::Client => s.client.clone(),
            Key::Platform => s.platform.map(|n| n.to_string()),
            Key::Token => s.token.as_ref().map(|t| match t {
                TokenScope::Exact(t) => t.clone(),
                TokenScope::Latest => "latest".into(),
            }),
            Key::Code => self.code.map(|n| n.to_string()),
            Key::Status => self.status.map(|n| n.to_string()),
            Key::Ms => self.ms.map(|n| n.to_string()),
            Key::For => self.window.or(self.freeze).map(show),
            Key::When => WHENS
                .iter()
                .find(|w| Some(w.1) == self.when)
                .map(|w| w.0.into()),
            Key::Times => self.times.map(|n| n.to_string()),
            Key::P => self.p.map(|n| n.to_string()),
            Key::Seed => self.seed.map(|n| n.to_string()),
        }
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Rule, RuleError> {
        if text.len() > MAX_RULE {
            return Err(err(
                "rule",
                format!("{} bytes; at most {MAX_RULE}", text.len()),
            ));
        }
        let mut words = text.split_whitespace();
        let first = words.next().ok_or_else(|| {
            err(
                "rule",
                "empty; write KIND key=value …, e.g. api.code path=/session_login code=18",
            )
        })?;
        let kind = Kind::from_name(first).ok_or_else(|| {
            let all = Kind::ALL.map(Kind::name).join(", ");
            err(first, format!("unknown kind; expected one of {all}"))
        })?;
        let (needs, _) = kind.keys();
        let mut rule = Rule::new(kind);
        let mut seen = Vec::new();
        for word in words {
            let (k, v) = match word {
                "latest" => ("token", "latest"),
                _ => word
                    .split_once('=')
                    .ok_or_else(|| err(word, "expected key=value, or the bare word latest"))?,
            };
            let Some(key) = Key::from_name(k).filter(|&key| kind.takes(key)) else {
                let takes = names(Key::ALL.into_iter().filter(|&key| kind.takes(key)));
                let part = if word == "latest" { word } else { k };
                return Err(err(part, format!("{} takes only {takes}", kind.name())));
            };
            if seen.contains(&key) {
                return Err(err(k, "given twice; give each key once"));
            }
            seen.push(key);
            if v.is_empty() {
                return Err(err(k, format!("empty value; write {k}=VALUE")));
            }
            if v.len() > MAX_VALUE || v.chars().any(char::is_control) {
                return Err(err(
                    k,
                    format!("expected printable text, {MAX_VALUE} bytes at most"),
                ));
            }
            rule.set(key, word, v)?;
        }
        if let Some(missing) = needs.iter().find(|k| !seen.contains(k)) {
            let needs = names(needs.iter().copied());
            return Err(err(
                missing.name(),
                format!("missing: {} needs {needs}", kind.name()),
            ));
        }
        if rule.seed.is_some() && rule.p.is_none() {
            return Err(err("seed", "only with p=, e.g. p=0.1 seed=7"));
        }
        Ok(rule)
    }
}

/// The canonical text: kind, then the set keys in a fixed order, so that
/// stored and listed rules compare as text and parse back to the same rule.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        for key in Key::ALL {
            match self.get(key) {
                Some(_) if key == Key::Token && self.scope.token == Some(TokenScope::Latest) => {
                    f.write_str(" latest")?
                }
                Some(v) => write!(f, " {}={v}", key.name())?,
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 17] = [
        "api.code path=/session_login code=18 times=2 user=bob",
        "api.http path=/route status=503 latest platform=2",
        "api.delay path=/route ms=1500 for=1m30s",
        "api.hang path=/session_login ms=30000 mobile=13800000000",
        "api.cut path=/route client=c1 token=tok-1",
        "qr.expire latest",
        "qr.ttl ms=5000 platform=5",
        "sms.delay mobile=13800000000 ms=2000",
        "sms.fail mobile=13800000000 times=3",
        "ws.close user=alice code=4001",
        "ws.reset client=c9",
        "ws.freeze user=alice for=5s",
        "ws.delay-pushes user=bob ms=800",
        "ws.drop-pushes user=bob for=10s",
        "ws.fail-ack user=bob when=before",
        "ws.refuse-connect platform=1 p=0.25",
        "route.dead user=carol",
    ];

    #[test]
    fn every_kind_parses_and_round_trips() {
        let mut kinds: Vec<Kind> = GOOD
            .iter()
            .map(|t| t.parse::<Rule>().unwrap().kind)
            .collect();
        kinds.sort();
        assert_eq!(kinds, Kind::ALL, "one example per kind");
        let extra = [
            "api.code path=/session_login code=3 p=0.1 seed=7",
            "ws.freeze for=1m1s1ms",
        ];
        for text in GOOD.iter().chain(&extra) {
            let rule: Rule = text.parse().unwrap();
            let shown = rule.to_string();
            assert_eq!(shown.parse::<Rule>(), Ok(rule), "{text} -> {shown}");
        }
    }

    #[test]
    fn names_are_unique_and_resolve() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert!(!k.about().is_empty());
        }
        assert_eq!(Kind::from_name("api"), None);
        assert!(Kind::ApiDelay.lasting() && !Kind::ApiCode.lasting());
    }

    #[test]
    fn fields_land_where_documented() {
        let r: Rule = "api.code path=/x code=18 times=2 user=bob".parse().unwrap();
        assert_eq!(
            (r.code, r.times, r.scope.user.as_deref()),
            (Some(18), Some(2), Some("bob"))
        );
        let r: Rule = "ws.freeze user=alice for=5s".parse().unwrap();
        assert_eq!((r.freeze, r.window), (Some(Duration::from_secs(5)), None));
        let r: Rule = "ws.drop-pushes user=bob for=10s".parse().unwrap();
        assert_eq!((r.freeze, r.window), (None, Some(Duration::from_secs(10))));
        let r: Rule = "qr.expire token=latest".parse().unwrap();
        assert_eq!(r.scope.token, Some(TokenScope::Latest));
        assert_eq!(r.to_string(), "qr.expire latest");
        let r: Rule = "ws.delay-pushes ms=5 seed=7 p=1 times=4 client=c user=u"
            .parse()
            .unwrap();
        assert_eq!(
            r.to_string(),
            "ws.delay-pushes user=u client=c ms=5 times=4 p=1 seed=7"
        );
    }

    #[test]
    fn bad_rules_name_the_bad_part() {
        let long = format!("api.cut path=/{}", "a".repeat(MAX_VALUE));
        let huge = format!("api.cut path=/x{}", " times=1".repeat(200));
        let cases = [
            ("", "rule"),
            ("   ", "rule"),
            (huge.as_str(), "rule"),
            ("api.nope path=/x", "api.nope"),
            ("sms.fail user=bob", "user"),
            ("route.dead path=/x", "path"),
            ("qr.expire when=before", "when"),
            ("api.code code=18", "path"),
            ("api.code path=/x", "code"),
            ("ws.freeze user=alice", "for"),
            ("qr.ttl latest", "ms"),
            ("api.code path=/x code=abc", "code=abc"),
            ("api.code path=/x code=1000", "code=1000"),
            ("api.code path=x code=1", "path=x"),
            ("api.http path=/x status=200", "status=200"),
            ("ws.close code=2000", "code=2000"),
            ("api.delay path=/x ms=0", "ms=0"),
            ("api.delay path=/x ms=600001", "ms=600001"),
            ("ws.reset platform=100", "platform=100"),
            ("ws.reset times=0", "times=0"),
            ("ws.reset p=0", "p=0"),
            ("ws.reset p=1.5", "p=1.5"),
            ("ws.reset p=NaN", "p=NaN"),
            ("ws.reset for=soon", "for=soon"),
            ("ws.reset for=0s", "for=0s"),
            ("ws.reset for=25h", "for=25h"),
            ("ws.freeze for=11m", "for=11m"),
            ("ws.fail-ack when=during", "when=during"),
            ("ws.reset seed=7", "seed"),
            ("ws.reset p=0.5 seed=-1", "seed=-1"),
            ("ws.reset user=a user=b", "user"),
            ("qr.expire latest token=t", "token"),
            ("ws.reset user=", "user"),
            ("ws.reset user=a\u{7}", "user"),
            (long.as_str(), "path"),
            ("ws.reset bob", "bob"),
        ];
        for (text, part) in cases {
            let e = text.parse::<Rule>().expect_err(text);
            assert_eq!(e.part, part, "{text}: {e}");
            assert!(!e.why.is_empty());
        }
        let e = "sms.fail user=bob".parse::<Rule>().unwrap_err();
        assert_eq!(e.why, "sms.fail takes only mobile, for, times, p, seed");
        let e = "ws.freeze ms=1".parse::<Rule>().unwrap_err();
        assert_eq!(
            e.why,
            "ws.freeze takes only user, client, platform, for, times, p, seed"
        );
        assert_eq!(
            "sms.fail latest".parse::<Rule>().unwrap_err().part,
            "latest"
        );
    }
}
