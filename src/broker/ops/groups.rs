//! Groups: the changes (`group.create`, `.add`, `.remove`, `.leave`,
//! `.dissolve`, `.admin`, `.rename`), which the writer plans, commits and
//! announces, and the reads `group.info` and `group.list`.

use super::{Ctx, Handled, db_error, only_friends, refuse, to_writer};
use crate::broker::writer::{Replier, WriteOp};
use crate::store::GroupChange;
use crate::wire::ws::Reply;
use crate::wire::ws::{GroupCreateReq, GroupMembersReq, GroupReq, code};

/// `group.create`: the creator's friends only, with `--friends-only`.
pub async fn create(cx: &Ctx<'_>, r: GroupCreateReq) -> Handled {
    only_friends(cx, &r.members, "put in a group").await?;
    let change = GroupChange::Create {
        name: r.name,
        members: r.members,
    };
    self::change(cx, change).await
}

/// `group.add`: the adder's friends only, with `--friends-only`.
pub async fn add(cx: &Ctx<'_>, r: GroupMembersReq) -> Handled {
    only_friends(cx, &r.members, "put in a group").await?;
    let change = GroupChange::Add {
        group: r.group,
        members: r.members,
    };
    self::change(cx, change).await
}

/// Every group change, once checked here: the writer plans, commits and
/// announces it, and answers in the reply of the change's op.
pub async fn change(cx: &Ctx<'_>, change: GroupChange) -> Handled {
    let write = WriteOp::Group {
        actor: cx.who.user_id.clone(),
        change,
        id: cx.id,
        reply: Replier::Conn(cx.conn.clone()),
    };
    to_writer(cx.broker, write).await
}

pub async fn info(cx: &Ctx<'_>, req: GroupReq) -> Handled {
    let Some(group) = cx
        .broker
        .store
        .group_info(&req.group)
        .await
        .map_err(db_error)?
    else {
        return refuse(code::NOT_FOUND, format!("no group {:?}", req.group));
    };
    if !group.members.iter().any(|m| m.user_id == cx.me()) {
        return refuse(
            code::FORBIDDEN,
            format!("you are not a member of group {:?}", req.group),
        );
    }
    cx.reply(Reply::GroupInfo { group });
    Ok(())
}

pub async fn list(cx: &Ctx<'_>) -> Handled {
    let groups = cx.broker.store.groups_of(cx.me()).await.map_err(db_error)?;
    cx.reply(Reply::GroupList { groups });
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::broker::ops::testkit::{Rig, drain, next, run};

    #[tokio::test]
    async fn a_member_creates_and_reads_a_group_and_an_outsider_is_refused() {
        let rig = Rig::new().await;
        let (mut alice, carol) = (rig.connect("alice").await, rig.connect("carol").await);
        let create = json!({"op": "group.create", "name": "Lunch", "members": ["bob"]});
        run(&alice.cx(Some(1)), create).await.unwrap();
        let created = next(&mut alice.queue).await;
        assert_eq!(
            (&created["op"], &created["id"]),
            (&json!("group.create"), &json!(1))
        );
        let group = created["group"]["id"].as_str().unwrap().to_owned();
        drain(&mut alice.queue);

        run(
            &alice.cx(Some(2)),
            json!({"op": "group.info", "group": group}),
        )
        .await
        .unwrap();
        let about = next(&mut alice.queue).await;
        assert_eq!(
            (&about["op"], &about["id"]),
            (&json!("group.info"), &json!(2))
        );
        assert_eq!(about["group"]["name"], "Lunch");
        run(&alice.cx(Some(3)), json!({"op": "group.list"}))
            .await
            .unwrap();
        let listed = next(&mut alice.queue).await;
        assert_eq!(listed["groups"][0]["id"], group.as_str());

        let r = run(&carol.cx(None), json!({"op": "group.info", "group": group}))
            .await
            .unwrap_err();
        assert_eq!(
            (r.0, r.1),
            (
                code::FORBIDDEN,
                format!("you are not a member of group {group:?}")
            )
        );
        let r = run(
            &carol.cx(None),
            json!({"op": "group.info", "group": "g404"}),
        )
        .await
        .unwrap_err();
        assert_eq!((r.0, r.1.as_str()), (code::NOT_FOUND, "no group \"g404\""));
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_change_by_a_non_member_is_refused_by_the_writer() {
        let rig = Rig::new().await;
        let (mut alice, mut carol) = (rig.connect("alice").await, rig.connect("carol").await);
        let create = json!({"op": "group.create", "name": "Lunch", "members": ["bob"]});
        run(&alice.cx(None), create).await.unwrap();
        let group = next(&mut alice.queue).await["group"]["id"].clone();
        let rename = json!({"op": "group.rename", "group": group, "name": "Mine"});
        run(&carol.cx(Some(5)), rename).await.unwrap();
        let refused = next(&mut carol.queue).await;
        assert_eq!(
            (&refused["op"], &refused["id"], &refused["code"]),
            (&json!("error"), &json!(5), &json!(code::FORBIDDEN))
        );
        let group = group.as_str().unwrap();
        assert_eq!(
            refused["message"],
            format!("you are not a member of group {group:?}")
        );
        let r = run(&carol.cx(None), json!({"op": "group.leave"}))
            .await
            .unwrap_err();
        assert_eq!(r.0, code::BAD_REQUEST);
        assert!(
            r.1.starts_with("bad group.leave frame: missing field `group`"),
            "{}",
            r.1
        );
        rig.stop().await;
    }
}
