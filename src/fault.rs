//! Faults injected on purpose (`imctl chaos`): the live rules, which
//! request, push or connection each one matches, whether its trigger fires,
//! and the record of every injection (log line, metric, dashboard feed).
//!
//! The rules' text form is `wire::fault`; the effects are applied where the
//! things they bend live (the app-server's middleware, the QR book, the SMS
//! book, the broker's hub and connections). Nothing here touches the store:
//! a fault changes what a client sees, never what was committed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::activity::Activity;
use crate::metrics::Metrics;
use crate::wire::fault::{Kind, Rule, TokenScope};
use crate::wire::http::{FaultInfo, InjectedInfo};

/// Rules kept at once, spent ones included (the oldest spent one makes room).
pub const MAX_RULES: usize = 100;
/// Injections remembered for the dashboard and `GET /_dev/faults`.
pub const RECENT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(
        "{MAX_RULES} fault rules are live, the most imctl keeps; clear some with `imctl chaos clear`"
    )]
    Full,
    #[error("no fault rule {0}; `imctl chaos list` shows the rules")]
    NoSuchRule(u64),
}

/// What a request, push or connection is, for matching rules' scopes.
/// Fields left `None` match only rules that do not scope by them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Subject<'a> {
    pub path: Option<&'a str>,
    pub user: Option<&'a str>,
    pub mobile: Option<&'a str>,
    pub token: Option<&'a str>,
    /// Whether `token` is the newest live QR session (`latest`).
    pub latest: bool,
    pub client: Option<&'a str>,
    pub platform: Option<i32>,
}

/// A rule that fired: its id and parameters.
#[derive(Debug, Clone)]
pub struct Fired {
    pub id: u64,
    pub rule: Rule,
}

impl Fired {
    /// `rule 3 api.http`: how injected answers name themselves.
    pub fn label(&self) -> String {
        format!("rule {} {}", self.id, self.rule.kind.name())
    }
}

struct Live {
    id: u64,
    rule: Rule,
    added: Instant,
    added_ms: i64,
    fired: u64,
    /// Fires left (`times=`, or 1 by default for one-shot kinds).
    left: Option<u32>,
    rng: Option<(f64, StdRng)>,
}

impl Live {
    fn spent(&self, now: Instant) -> bool {
        self.left == Some(0) || self.rule.window.is_some_and(|w| now >= self.added + w)
    }

    fn info(&self, now: Instant) -> FaultInfo {
        let spent = self.spent(now);
        FaultInfo {
            id: self.id,
            rule: self.rule.to_string(),
            kind: self.rule.kind.name().into(),
            fired: self.fired,
            remaining: self.left,
            remaining_ms: self
                .rule
                .window
                .map(|w| (self.added + w).saturating_duration_since(now).as_millis() as u64),
            spent,
            added_at: self.added_ms,
        }
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    rules: Vec<Live>,
    recent: VecDeque<InjectedInfo>,
}

/// The live fault rules of one node.
#[derive(Clone)]
pub struct Faults(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    /// One bit per kind with an unspent rule: the hot paths (every push,
    /// every request) check this and nothing else when no rule is set.
    kinds: AtomicU32,
    metrics: Arc<Metrics>,
    /// Bumped on every change and injection (the dashboard's feed waits on it).
    pub activity: Activity,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Faults {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Faults(Arc::new(Inner {
            state: Mutex::default(),
            kinds: AtomicU32::new(0),
            metrics,
            activity: Activity::default(),
        }))
    }

    /// Bumped on every change and injection.
    pub fn activity(&self) -> &Activity {
        &self.0.activity
    }

    /// Whether a rule of `kind` may fire: cheap, for hot paths.
    pub fn active(&self, kind: Kind) -> bool {
        self.0.kinds.load(Ordering::Relaxed) & bit(kind) != 0
    }

    /// Adds a rule; its id and state.
    pub fn add(&self, rule: Rule) -> Result<FaultInfo, FaultError> {
        let now = Instant::now();
        let mut state = self.0.state.lock().unwrap();
        if state.rules.len() >= MAX_RULES {
            let spent = state.rules.iter().position(|r| r.spent(now));
            let Some(i) = spent else {
                return Err(FaultError::Full);
            };
            state.rules.remove(i);
        }
        state.next_id += 1;
        let left = rule.times.or_else(|| {
            (rule.window.is_none() && rule.p.is_none() && !rule.kind.lasting()).then_some(1)
        });
        let mut rule = rule;
        let rng = rule.p.map(|p| {
            // Listed with its seed, so a run can be repeated.
            let seed = *rule.seed.get_or_insert_with(rand::random);
            (p, StdRng::seed_from_u64(seed))
        });
        let live = Live {
            id: state.next_id,
            rule,
            added: now,
            added_ms: now_ms(),
            fired: 0,
            left,
            rng,
        };
        let info = live.info(now);
        tracing::info!(rule = live.id, "fault rule added: {}", live.rule);
        state.rules.push(live);
        self.refresh(&state, now);
        drop(state);
        self.0.activity.bump();
        Ok(info)
    }

    /// Every rule, spent ones included, oldest first.
    pub fn list(&self) -> Vec<FaultInfo> {
        let now = Instant::now();
        let state = self.0.state.lock().unwrap();
        state.rules.iter().map(|r| r.info(now)).collect()
    }

    /// The newest injections, newest first.
    pub fn recent(&self, limit: usize) -> Vec<InjectedInfo> {
        let state = self.0.state.lock().unwrap();
        state.recent.iter().take(limit).cloned().collect()
    }

    /// Removes rule `id`, or every rule; how many went.
    pub fn clear(&self, id: Option<u64>) -> Result<usize, FaultError> {
        let now = Instant::now();
        let mut state = self.0.state.lock().unwrap();
        let before = state.rules.len();
        match id {
            Some(id) => {
                state.rules.retain(|r| r.id != id);
                if state.rules.len() == before {
                    return Err(FaultError::NoSuchRule(id));
                }
            }
            None => state.rules.clear(),
        }
        let cleared = before - state.rules.len();
        self.refresh(&state, now);
        drop(state);
        tracing::info!(rule = ?id, cleared, "fault rules cleared");
        self.0.activity.bump();
        Ok(cleared)
    }

    /// The first unspent rule of `kind` whose scope matches `subject` and
    /// whose trigger fires now; counted as fired. The caller applies the
    /// effect and reports it with [`Faults::injected`].
    pub fn check(&self, kind: Kind, subject: &Subject) -> Option<Fired> {
        self.check_where(kind, subject, |_, _| true)
    }

    /// [`check`](Self::check), among the rules `pick` accepts (by id and rule).
    pub fn check_where(
        &self,
        kind: Kind,
        subject: &Subject,
        pick: impl Fn(u64, &Rule) -> bool,
    ) -> Option<Fired> {
        if !self.active(kind) {
            return None;
        }
        let now = Instant::now();
        let mut state = self.0.state.lock().unwrap();
        let mut fired = None;
        for live in state.rules.iter_mut() {
            if live.rule.kind != kind
                || live.spent(now)
                || !matches(&live.rule, subject)
                || !pick(live.id, &live.rule)
            {
                continue;
            }
            if let Some((p, rng)) = &mut live.rng
                && !rand::RngExt::random_bool(rng, *p)
            {
                continue;
            }
            live.fired += 1;
            if let Some(left) = &mut live.left {
                *left -= 1;
            }
            fired = Some(Fired {
                id: live.id,
                rule: live.rule.clone(),
            });
            // Only a count running out changes the fast-path bits here;
            // ended windows are dropped by `sweep`.
            if live.left == Some(0) {
                self.refresh(&state, now);
            }
            break;
        }
        fired
    }

    /// Records an injection: an `injected:` log line, the metric, the feed.
    pub fn injected(&self, fired: &Fired, detail: &str) {
        let kind = fired.rule.kind.name();
        tracing::warn!(rule = fired.id, "injected: {kind}: {detail}");
        self.0.metrics.fault(kind);
        let mut state = self.0.state.lock().unwrap();
        if state.recent.len() == RECENT {
            state.recent.pop_back();
        }
        state.recent.push_front(InjectedInfo {
            at: now_ms(),
            id: fired.id,
            kind: kind.into(),
            detail: detail.into(),
        });
        drop(state);
        self.0.activity.bump();
    }

    /// Recomputes which kinds have an unspent rule.
    fn refresh(&self, state: &State, now: Instant) {
        let kinds = state
            .rules
            .iter()
            .filter(|r| !r.spent(now))
            .fold(0, |bits, r| bits | bit(r.rule.kind));
        self.0.kinds.store(kinds, Ordering::Relaxed);
    }

    /// Drops the fast-path bits of rules whose window has ended.
    pub fn expire(&self) {
        let state = self.0.state.lock().unwrap();
        self.refresh(&state, Instant::now());
    }
}

fn bit(kind: Kind) -> u32 {
    1 << (kind as u32)
}

/// Whether `rule`'s scope takes in `s`.
pub fn matches(rule: &Rule, s: &Subject) -> bool {
    let scope = &rule.scope;
    let same =
        |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| got == Some(w));
    let path_ok = scope.path.as_deref().is_none_or(|p| {
        s.path.is_some_and(|got| {
            p == "/"
                || got == p
                || got
                    .strip_prefix(p.trim_end_matches('/'))
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    });
    let token_ok = match &scope.token {
        None => true,
        Some(TokenScope::Latest) => s.latest,
        Some(TokenScope::Exact(t)) => s.token == Some(t.as_str()),
    };
    path_ok
        && token_ok
        && same(&scope.user, s.user)
        && same(&scope.mobile, s.mobile)
        && same(&scope.client, s.client)
        && scope.platform.is_none_or(|p| s.platform == Some(p))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Periodically refreshes the fast-path bits, so a rule whose `for=`
/// window ended stops costing the hot paths a lock.
pub async fn sweep(faults: Faults, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => faults.expire(),
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Rule {
        text.parse().unwrap()
    }

    fn req<'a>(path: &'a str) -> Subject<'a> {
        Subject {
            path: Some(path),
            ..Default::default()
        }
    }

    #[test]
    fn a_one_shot_rule_fires_once_then_is_spent() {
        let f = Faults::default();
        f.add(rule("api.code path=/session_login code=18")).unwrap();
        assert!(f.check(Kind::ApiCode, &req("/login")).is_none());
        let fired = f.check(Kind::ApiCode, &req("/session_login/abc")).unwrap();
        assert_eq!(fired.rule.code, Some(18));
        assert!(f.check(Kind::ApiCode, &req("/session_login/abc")).is_none());
        assert!(!f.active(Kind::ApiCode));
        let list = f.list();
        assert_eq!(
            (list[0].fired, list[0].spent, list[0].remaining),
            (1, true, Some(0))
        );
    }

    #[test]
    fn times_and_scopes() {
        let f = Faults::default();
        f.add(rule("ws.fail-ack user=bob times=2")).unwrap();
        let bob = Subject {
            user: Some("bob"),
            ..Default::default()
        };
        let alice = Subject {
            user: Some("alice"),
            ..Default::default()
        };
        assert!(f.check(Kind::WsFailAck, &alice).is_none());
        assert!(f.check(Kind::WsFailAck, &bob).is_some());
        assert!(f.check(Kind::WsFailAck, &bob).is_some());
        assert!(f.check(Kind::WsFailAck, &bob).is_none());
    }

    #[test]
    fn lasting_kinds_fire_until_cleared() {
        let f = Faults::default();
        let info = f.add(rule("ws.drop-pushes user=bob")).unwrap();
        let bob = Subject {
            user: Some("bob"),
            ..Default::default()
        };
        for _ in 0..5 {
            assert!(f.check(Kind::WsDropPushes, &bob).is_some());
        }
        assert_eq!(f.clear(Some(info.id)).unwrap(), 1);
        assert!(f.check(Kind::WsDropPushes, &bob).is_none());
        assert!(matches!(
            f.clear(Some(info.id)),
            Err(FaultError::NoSuchRule(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_ends() {
        let f = Faults::default();
        f.add(rule("ws.drop-pushes user=bob for=10s")).unwrap();
        let bob = Subject {
            user: Some("bob"),
            ..Default::default()
        };
        assert!(f.check(Kind::WsDropPushes, &bob).is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(f.check(Kind::WsDropPushes, &bob).is_none());
        assert!(f.list()[0].spent);
    }

    #[test]
    fn a_seeded_probability_repeats() {
        let draws = |seed: u64| {
            let f = Faults::default();
            f.add(rule(&format!(
                "api.code path=/login code=4 p=0.3 seed={seed}"
            )))
            .unwrap();
            (0..200)
                .map(|_| f.check(Kind::ApiCode, &req("/login")).is_some())
                .collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        let hits = a.iter().filter(|&&h| h).count();
        assert!((30..=90).contains(&hits), "{hits} of 200 at p=0.3");
    }

    #[test]
    fn latest_and_exact_tokens() {
        let f = Faults::default();
        f.add(rule("qr.expire latest")).unwrap();
        let old = Subject {
            token: Some("old"),
            ..Default::default()
        };
        let new = Subject {
            token: Some("new"),
            latest: true,
            ..Default::default()
        };
        assert!(f.check(Kind::QrExpire, &old).is_none());
        assert!(f.check(Kind::QrExpire, &new).is_some());
    }

    #[test]
    fn rules_are_bounded_and_spent_ones_make_room() {
        let f = Faults::default();
        for _ in 0..MAX_RULES {
            f.add(rule("ws.reset user=bob")).unwrap();
        }
        assert!(matches!(
            f.add(rule("ws.reset user=bob")),
            Err(FaultError::Full)
        ));
        let bob = Subject {
            user: Some("bob"),
            ..Default::default()
        };
        assert!(f.check(Kind::WsReset, &bob).is_some());
        f.add(rule("ws.reset user=bob")).unwrap();
        assert_eq!(f.list().len(), MAX_RULES);
    }

    #[test]
    fn injections_kept_are_bounded() {
        let f = Faults::default();
        f.add(rule("ws.drop-pushes")).unwrap();
        let fired = f.check(Kind::WsDropPushes, &Subject::default()).unwrap();
        for i in 0..RECENT + 5 {
            f.injected(&fired, &format!("drop {i}"));
        }
        let recent = f.recent(usize::MAX);
        assert_eq!(recent.len(), RECENT);
        assert_eq!(
            recent[0].detail,
            format!("drop {}", RECENT + 4),
            "newest first"
        );
    }

    #[test]
    fn injections_are_counted_and_kept() {
        let f = Faults::default();
        f.add(rule("sms.fail")).unwrap();
        let fired = f.check(Kind::SmsFail, &Subject::default()).unwrap();
        f.injected(&fired, "the SMS to 13800000001 failed");
        let recent = f.recent(10);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].kind, "sms.fail");
        assert!(
            f.0.metrics
                .render(Vec::new(), Vec::new())
                .contains("imctl_faults_injected_total{kind=\"sms.fail\"} 1")
        );
    }
}
