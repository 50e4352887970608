//! Groups: the changes (`group.create`, `.add`, `.remove`, `.leave`,
//! `.dissolve`, `.admin`, `.rename`), which the writer plans, commits and
//! announces, and the reads `group.info` and `group.list`.

use serde_json::Value;

use super::{Ctx, Handled, db_error, only_friends, parse, refuse, to_writer};
use crate::broker::writer::{Replier, WriteOp, frame};
use crate::store::GroupChange;
use crate::wire::ws::{
    GroupAdminReq, GroupCreateReq, GroupMembersReq, GroupRenameReq, GroupReq, code,
};

/// Every group change `op`; hands it to the writer.
pub async fn change(cx: &Ctx<'_>, op: &str, body: Value) -> Handled {
    let (op, change): (&'static str, GroupChange) = match op {
        "group.create" => {
            let r: GroupCreateReq = parse(op, body)?;
            only_friends(cx, &r.members, "put in a group").await?;
            (
                "group.create",
                GroupChange::Create {
                    name: r.name,
                    members: r.members,
                },
            )
        }
        "group.add" => {
            let r: GroupMembersReq = parse(op, body)?;
            only_friends(cx, &r.members, "put in a group").await?;
            (
                "group.add",
                GroupChange::Add {
                    group: r.group,
                    members: r.members,
                },
            )
        }
        "group.remove" => {
            let r: GroupMembersReq = parse(op, body)?;
            (
                "group.remove",
                GroupChange::Remove {
                    group: r.group,
                    members: r.members,
                },
            )
        }
        "group.leave" => (
            "group.leave",
            GroupChange::Leave {
                group: parse::<GroupReq>(op, body)?.group,
            },
        ),
        "group.dissolve" => (
            "group.dissolve",
            GroupChange::Dissolve {
                group: parse::<GroupReq>(op, body)?.group,
            },
        ),
        "group.admin" => {
            let r: GroupAdminReq = parse(op, body)?;
            (
                "group.admin",
                GroupChange::SetAdmin {
                    group: r.group,
                    user: r.user_id,
                    admin: r.admin,
                },
            )
        }
        _ => {
            let r: GroupRenameReq = parse(op, body)?;
            (
                "group.rename",
                GroupChange::Rename {
                    group: r.group,
                    name: r.name,
                },
            )
        }
    };
    let write = WriteOp::Group {
        actor: cx.who.user_id.clone(),
        change,
        op,
        id: cx.id,
        reply: Replier::Conn(cx.conn.clone()),
    };
    to_writer(cx.broker, write).await
}

pub async fn info(cx: &Ctx<'_>, body: Value) -> Handled {
    let req: GroupReq = parse("group.info", body)?;
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
    cx.conn.send(frame(
        &serde_json::json!({"id": cx.id, "op": "group.info", "group": group}),
    ));
    Ok(())
}

pub async fn list(cx: &Ctx<'_>) -> Handled {
    let groups = cx.broker.store.groups_of(cx.me()).await.map_err(db_error)?;
    cx.conn.send(frame(
        &serde_json::json!({"id": cx.id, "op": "group.list", "groups": groups}),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::broker::ops::testkit::{Rig, drain, next};

    #[tokio::test]
    async fn a_member_creates_and_reads_a_group_and_an_outsider_is_refused() {
        let rig = Rig::new().await;
        let (mut alice, carol) = (rig.connect("alice").await, rig.connect("carol").await);
        let create = json!({"op": "group.create", "name": "Lunch", "members": ["bob"]});
        change(&alice.cx(Some(1)), "group.create", create)
            .await
            .unwrap();
        let created = next(&mut alice.queue).await;
        assert_eq!(
            (&created["op"], &created["id"]),
            (&json!("group.create"), &json!(1))
        );
        let group = created["group"]["id"].as_str().unwrap().to_owned();
        drain(&mut alice.queue);

        info(
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
        list(&alice.cx(Some(3))).await.unwrap();
        let listed = next(&mut alice.queue).await;
        assert_eq!(listed["groups"][0]["id"], group.as_str());

        let r = info(&carol.cx(None), json!({"op": "group.info", "group": group}))
            .await
            .unwrap_err();
        assert_eq!(
            (r.0, r.1),
            (
                code::FORBIDDEN,
                format!("you are not a member of group {group:?}")
            )
        );
        let r = info(
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
        change(&alice.cx(None), "group.create", create)
            .await
            .unwrap();
        let group = next(&mut alice.queue).await["group"]["id"].clone();
        let rename = json!({"op": "group.rename", "group": group, "name": "Mine"});
        change(&carol.cx(Some(5)), "group.rename", rename)
            .await
            .unwrap();
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
        let r = change(&carol.cx(None), "group.leave", json!({"op": "group.leave"}))
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
