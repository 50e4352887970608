//! The broker's side of `imctl chaos`: the faults that bend connections
//! (`ws.close`, `ws.reset`, `ws.freeze`, `ws.refuse-connect`), acks
//! (`ws.fail-ack`) and `/route` (`route.dead`). Pushes are bent in the hub.
//! None of them touches the store: what was committed stays committed.

use std::time::Duration;

use super::Broker;
use super::hub::{ConnHandle, ConnInfo, fault_notice};
use crate::fault::{Fired, Subject};
use crate::wire::fault::{AckWhen, Kind};
use crate::wire::ws::close;

/// The close reason of an injected `ws.close`.
const CLOSE_REASON: &str = "injected: ws.close (imctl chaos)";

fn subject(info: &ConnInfo) -> Subject<'_> {
    Subject {
        user: Some(&info.user_id),
        client: Some(&info.client_id),
        platform: Some(info.platform),
        ..Default::default()
    }
}

const LIVE_KINDS: [Kind; 3] = [Kind::WsClose, Kind::WsReset, Kind::WsFreeze];

/// Rule `rule`, just added, for the connections open now (other rules wait
/// for their next frame): one fire bends every connection of the user it
/// matched first (so `ws.close user=alice` closes all of alice's).
pub fn apply_live(broker: &Broker, rule: u64) {
    let faults = &broker.hub.faults;
    if !LIVE_KINDS.iter().any(|k| faults.active(*k)) {
        return;
    }
    let conns = broker.hub.each();
    for kind in LIVE_KINDS {
        let mut done: Vec<(String, Fired)> = Vec::new();
        for (conn, info) in &conns {
            let s = subject(info);
            let fired = match done.iter().find(|(u, _)| *u == info.user_id) {
                Some((_, fired)) if crate::fault::matches(&fired.rule, &s) => fired.clone(),
                Some(_) => continue,
                None => match faults.check_where(kind, &s, |id, _| id == rule) {
                    Some(fired) => {
                        done.push((info.user_id.clone(), fired.clone()));
                        fired
                    }
                    None => continue,
                },
            };
            bend(broker, conn, info, &fired);
        }
    }
}

/// The rules on live connections, for a frame `conn` just sent: the next
/// thing a matching client does finds its connection bent.
pub fn on_frame(broker: &Broker, conn: &ConnHandle, user: &str, client: &str, platform: i32) {
    let faults = &broker.hub.faults;
    if !LIVE_KINDS.iter().any(|k| faults.active(*k)) {
        return;
    }
    let info = ConnInfo {
        user_id: user.to_owned(),
        client_id: client.to_owned(),
        platform,
        since: 0,
        node: None,
    };
    for kind in LIVE_KINDS {
        if let Some(fired) = faults.check(kind, &subject(&info)) {
            bend(broker, conn, &info, &fired);
            return;
        }
    }
}

fn bend(broker: &Broker, conn: &ConnHandle, info: &ConnInfo, fired: &Fired) {
    let faults = &broker.hub.faults;
    let who = format!("{:?} ({:?})", info.user_id, info.client_id);
    match fired.rule.kind {
        Kind::WsClose => {
            let code = fired.rule.code.map_or(close::TOO_SLOW, |c| c as u16);
            faults.injected(fired, &format!("closed {who}'s connection with {code}"));
            conn.close(code, CLOSE_REASON);
        }
        Kind::WsReset => {
            faults.injected(fired, &format!("reset {who}'s connection (no close frame)"));
            conn.reset();
        }
        Kind::WsFreeze => {
            let d = fired.rule.freeze.unwrap_or(Duration::from_secs(10));
            let detail = format!(
                "froze {who}'s connection for {} ms (no reads, no writes)",
                d.as_millis()
            );
            faults.injected(fired, &detail);
            conn.send(fault_notice(fired, detail));
            conn.freeze(d);
        }
        _ => {}
    }
}

/// `ws.refuse-connect`: the refusal's message, if `connect` is refused.
pub fn refuse_connect(broker: &Broker, user: &str, client: &str, platform: i32) -> Option<String> {
    let faults = &broker.hub.faults;
    if !faults.active(Kind::WsRefuseConnect) {
        return None;
    }
    let s = Subject {
        user: Some(user),
        client: Some(client),
        platform: Some(platform),
        ..Default::default()
    };
    let fired = faults.check(Kind::WsRefuseConnect, &s)?;
    faults.injected(&fired, &format!("refused {user:?}'s connect ({client:?})"));
    Some(format!(
        "injected: connect refused by fault {} (imctl chaos); reconnect later",
        fired.label()
    ))
}

/// `ws.fail-ack`: the error answered instead of the ack of a send by
/// `user`, before the commit (nothing stored) or after it (stored: the
/// client resends with the same clientMsgId and gets the same message).
pub fn fail_ack(broker_faults: &crate::fault::Faults, user: &str, when: AckWhen) -> Option<String> {
    if !broker_faults.active(Kind::WsFailAck) || user == crate::wire::ids::ROBOT {
        return None;
    }
    let s = Subject {
        user: Some(user),
        ..Default::default()
    };
    let fired = broker_faults.check_where(Kind::WsFailAck, &s, |_, r| {
        r.when.unwrap_or(AckWhen::After) == when
    })?;
    let (at, what) = match when {
        AckWhen::Before => ("before", "nothing was stored"),
        AckWhen::After => ("after", "the message is stored"),
    };
    broker_faults.injected(
        &fired,
        &format!("failed {user:?}'s ack {at} the commit ({what})"),
    );
    Some(format!(
        "injected: the send failed {at} the commit by fault {} ({what}); resend with the same clientMsgId",
        fired.label()
    ))
}

/// `route.dead`: a port where nothing listens, if `/route` must hand it out.
pub fn dead_route(broker: &Broker, user: &str) -> Option<u16> {
    let faults = &broker.hub.faults;
    if !faults.active(Kind::RouteDead) {
        return None;
    }
    let s = Subject {
        user: Some(user),
        ..Default::default()
    };
    let fired = faults.check(Kind::RouteDead, &s)?;
    // Bound and let go at once: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(9, |a| a.port());
    faults.injected(
        &fired,
        &format!("/route sent {user:?} to port {port}, where nothing listens"),
    );
    Some(port)
}
