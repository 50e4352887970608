//! People: friend requests and answers, the friend lists, and profiles
//! (read, and updated with a push to friends and the user's other devices).

use axum::extract::ws::Utf8Bytes;

use super::{Ctx, Handled, Refusal, bad_request, db_error, refuse};
use crate::store::Requested;
use crate::wire::limits;
use crate::wire::ws::{Friend, Reply};
use crate::wire::ws::{
    FriendAnswerReq, FriendRequestReq, Notify, ProfileGetReq, ProfileUpdateReq, Push, code,
};

pub async fn friend_request(cx: &Ctx<'_>, req: FriendRequestReq) -> Handled {
    let remark = req.remark.unwrap_or_default();
    limits::check_optional_text("remark", &remark, limits::MAX_REMARK).map_err(bad_request)?;
    let (broker, me) = (cx.broker, cx.me());
    let outcome = broker
        .store
        .friend_request(me, &req.target, &remark)
        .await
        .map_err(db_error)?;
    match outcome.map_err(Refusal::from)? {
        Requested::Pending(request) => {
            let push = Push::Notify(Notify::FriendRequest {
                from: me.to_owned(),
                remark,
                request: request.clone(),
            });
            cx.push(&req.target, &push);
            cx.reply(Reply::FriendRequest {
                request: Some(request),
                friends: false,
            });
        }
        Requested::Befriended => {
            // They had asked first: the request counts as acceptance.
            let from = me.to_owned();
            cx.push(&req.target, &Push::Notify(Notify::FriendAccepted { from }));
            cx.reply(Reply::FriendRequest {
                request: None,
                friends: true,
            });
        }
    }
    Ok(())
}

/// `friend.accept` or `friend.reject`.
pub async fn friend_answer(cx: &Ctx<'_>, accept: bool, req: FriendAnswerReq) -> Handled {
    cx.broker
        .store
        .friend_answer(cx.me(), &req.from, accept)
        .await
        .map_err(db_error)?
        .map_err(Refusal::from)?;
    let from = cx.me().to_owned();
    let notify = if accept {
        Notify::FriendAccepted { from }
    } else {
        Notify::FriendRejected { from }
    };
    cx.push(&req.from, &Push::Notify(notify));
    cx.reply(if accept {
        Reply::FriendAccept { from: req.from }
    } else {
        Reply::FriendReject { from: req.from }
    });
    Ok(())
}

pub async fn friend_list(cx: &Ctx<'_>) -> Handled {
    let broker = cx.broker;
    let friends = broker.store.friends_of(cx.me()).await.map_err(db_error)?;
    let friends = friends
        .iter()
        .map(|u| Friend {
            profile: broker.profile(u, cx.me(), &cx.who.urls),
            online: broker.hub.is_online(&u.id),
        })
        .collect();
    cx.reply(Reply::FriendList { friends });
    Ok(())
}

pub async fn friend_pending(cx: &Ctx<'_>) -> Handled {
    let (incoming, outgoing) = cx
        .broker
        .store
        .pending_requests(cx.me())
        .await
        .map_err(db_error)?;
    cx.reply(Reply::FriendPending { incoming, outgoing });
    Ok(())
}

pub async fn profile_get(cx: &Ctx<'_>, req: ProfileGetReq) -> Handled {
    let ids: Vec<String> = match (req.users, req.user_id) {
        (Some(users), _) => users,
        (None, Some(one)) => vec![one],
        (None, None) => vec![cx.who.user_id.clone()],
    };
    if ids.len() > 500 {
        return refuse(code::BAD_REQUEST, "ask for at most 500 users at once");
    }
    let users = cx.broker.store.users_by_ids(&ids).await.map_err(db_error)?;
    let unknown: Vec<String> = ids
        .into_iter()
        .filter(|id| !users.iter().any(|u| &u.id == id))
        .collect();
    let profiles: Vec<_> = users
        .iter()
        .map(|u| cx.broker.profile(u, cx.me(), &cx.who.urls))
        .collect();
    cx.reply(Reply::ProfileGet {
        users: profiles,
        unknown,
    });
    Ok(())
}

pub async fn profile_update(cx: &Ctx<'_>, req: ProfileUpdateReq) -> Handled {
    let name = req.display_name.as_deref().map(str::trim);
    if let Some(n) = name {
        limits::check_text("displayName", n, limits::MAX_DISPLAY_NAME).map_err(bad_request)?;
    }
    if let Some(p) = &req.portrait {
        limits::check_url("portrait", p).map_err(bad_request)?;
    }
    if name.is_none() && req.portrait.is_none() {
        return refuse(
            code::BAD_REQUEST,
            "nothing to update: give displayName and/or portrait",
        );
    }
    let (broker, me) = (cx.broker, cx.me());
    let Some(user) = broker
        .store
        .update_profile(me, name, req.portrait.as_deref())
        .await
        .map_err(db_error)?
    else {
        return refuse(code::NOT_FOUND, "your user no longer exists");
    };
    // One frame for every friend's connections, whatever host each reached us by.
    let shared = broker.options.advertise.default_urls();
    let push: Utf8Bytes = Push::Profile {
        user: broker.profile(&user, "", &shared),
    }
    .frame()
    .into();
    for friend in broker.store.friends_of(me).await.map_err(db_error)? {
        broker.hub.deliver(&friend.id, &push, None);
    }
    broker.hub.deliver(me, &push, Some(cx.conn.id));
    cx.reply(Reply::ProfileUpdate {
        user: broker.profile(&user, me, &cx.who.urls),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::broker::ops::testkit::{Rig, drain, run};

    #[tokio::test]
    async fn a_request_and_its_acceptance_reach_both_sides() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        let ask = json!({"op": "friend.request", "target": "bob", "remark": "hi"});
        run(&alice.cx(Some(1)), ask).await.unwrap();
        let reply = drain(&mut alice.queue).pop().unwrap();
        assert_eq!(
            (&reply["op"], &reply["id"], &reply["friends"]),
            (&json!("friend.request"), &json!(1), &json!(false))
        );
        let notify = drain(&mut bob.queue).pop().unwrap();
        assert_eq!(
            (&notify["kind"], &notify["from"], &notify["remark"]),
            (&json!("friend_request"), &json!("alice"), &json!("hi"))
        );

        run(&bob.cx(Some(2)), json!({"op": "friend.pending"}))
            .await
            .unwrap();
        let pending = drain(&mut bob.queue).pop().unwrap();
        assert_eq!(pending["incoming"].as_array().map(Vec::len), Some(1));
        run(
            &bob.cx(Some(3)),
            json!({"op": "friend.accept", "from": "alice"}),
        )
        .await
        .unwrap();
        assert_eq!(
            drain(&mut bob.queue).pop().unwrap(),
            json!({"id": 3, "op": "friend.accept", "from": "alice"})
        );
        let accepted = drain(&mut alice.queue).pop().unwrap();
        assert_eq!(
            accepted,
            json!({"op": "notify", "kind": "friend_accepted", "from": "bob"})
        );

        run(&alice.cx(None), json!({"op": "friend.list"}))
            .await
            .unwrap();
        let list = drain(&mut alice.queue).pop().unwrap();
        assert_eq!(
            (&list["friends"][0]["userId"], &list["friends"][0]["online"]),
            (&json!("bob"), &json!(true))
        );
        // Answering again: the store's refusal, unchanged.
        let again = json!({"op": "friend.reject", "from": "alice"});
        let r = run(&bob.cx(None), again).await.unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (code::NOT_FOUND, "no pending friend request from \"alice\"")
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn profiles_are_read_and_an_update_reaches_friends_and_other_devices() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        let mut alice_web = rig.connect("alice").await;
        rig.befriend(&mut alice, &mut bob).await;
        drain(&mut alice_web.queue);

        run(
            &alice.cx(None),
            json!({"op": "profile.get", "users": ["bob", "zed"]}),
        )
        .await
        .unwrap();
        let got = drain(&mut alice.queue).pop().unwrap();
        assert_eq!(
            (&got["users"][0]["displayName"], &got["unknown"]),
            (&json!("Bob Chen"), &json!(["zed"]))
        );
        assert!(
            got["users"][0].get("mobile").is_none(),
            "only one's own mobile is shown"
        );

        let update = json!({"op": "profile.update", "displayName": "  Alice L  "});
        run(&alice.cx(Some(7)), update).await.unwrap();
        let reply = drain(&mut alice.queue).pop().unwrap();
        assert_eq!(
            (&reply["id"], &reply["user"]["displayName"]),
            (&json!(7), &json!("Alice L"))
        );
        for queue in [&mut bob.queue, &mut alice_web.queue] {
            let push = drain(queue).pop().unwrap();
            assert_eq!(
                (&push["op"], &push["user"]["displayName"]),
                (&json!("profile"), &json!("Alice L"))
            );
        }
        let r = run(&alice.cx(None), json!({"op": "profile.update"}))
            .await
            .unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (
                code::BAD_REQUEST,
                "nothing to update: give displayName and/or portrait"
            )
        );
        rig.stop().await;
    }
}
