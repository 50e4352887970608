//! One membership change, in steps: load the group → authorise the actor →
//! plan the change (or refuse) → check the named users exist → write →
//! plan the notification. Every refusal is decided before anything is
//! written; the planning steps do no I/O, so they are tested on their own.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{GroupChange, GroupInfo, info_in, make_owner};
use crate::store::Result;
use crate::store::db::{Tx, on_tx};
use crate::store::{Refused, Why};

/// `?` for refusals: returns `Ok(Err(refusal))` from the enclosing step.
macro_rules! or_refuse {
    ($step:expr) => {
        match $step {
            Ok(value) => value,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

/// A change written inside the transaction, and what announces it.
pub(super) struct Planned {
    pub(super) group: String,
    pub(super) content: Value,
    pub(super) recipients: Vec<String>,
}

/// Checks `change` by `actor` and writes it inside the caller's
/// transaction. `Ok(Err(..))` is a refusal: nothing was written.
pub(super) async fn apply(
    conn: &mut Tx<'_>,
    actor: &str,
    change: &GroupChange,
    now: i64,
) -> Result<Result<Planned, Refused>> {
    let decided = or_refuse!(decide(conn, actor, change).await?);
    if let Some(users) = decided.plan.must_exist() {
        let unknown = unknown_users(conn, users).await?;
        if !unknown.is_empty() {
            let refusal = format!("no such users: {}", unknown.join(", "));
            return Ok(Err(Refused::new(Why::Missing, refusal)));
        }
    }
    write(conn, actor, &decided.group, &decided.plan, now).await?;
    let (content, recipients) = announce(actor, decided.plan, decided.members);
    Ok(Ok(Planned {
        group: decided.group,
        content,
        recipients,
    }))
}

/// A change decided: its group, the members before it, and the plan.
struct Decided {
    group: String,
    members: Vec<String>,
    plan: Plan,
}

/// Loads the group a change is about, authorises the actor and plans the
/// change; a new group has nothing to load.
async fn decide(
    conn: &mut Tx<'_>,
    actor: &str,
    change: &GroupChange,
) -> Result<Result<Decided, Refused>> {
    let group = match change {
        GroupChange::Create { name, members } => {
            return Ok(plan_create(actor, name, members).map(|plan| Decided {
                group: format!("g{}", crate::token::random_token(5)),
                members: Vec::new(),
                plan,
            }));
        }
        GroupChange::Add { group, .. }
        | GroupChange::Remove { group, .. }
        | GroupChange::Leave { group }
        | GroupChange::Dissolve { group }
        | GroupChange::Rename { group, .. }
        | GroupChange::SetAdmin { group, .. } => group,
    };
    let group = or_refuse!(load(conn, group).await?);
    let role = or_refuse!(authorise(actor, &group));
    let plan = or_refuse!(plan_change(actor, change, &group, role));
    Ok(Ok(Decided {
        members: group.members.into_iter().map(|m| m.user_id).collect(),
        group: group.id,
        plan,
    }))
}

/// The group as it is, refusing one that does not exist or was dissolved.
async fn load(conn: &mut Tx<'_>, id: &str) -> Result<Result<GroupInfo, Refused>> {
    if let Tx::Postgres(c) = conn {
        // Another imctl process may change the group meanwhile: its row
        // stays locked until this change commits (SQLite has one writer).
        sqlx::query("SELECT 1 FROM groups WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut **c)
            .await?;
    }
    Ok(match info_in(conn, id).await? {
        Some(g) if g.dissolved_at.is_some() => Err(Refused::new(
            Why::Missing,
            format!("group {id:?} was dissolved"),
        )),
        Some(g) => Ok(g),
        None => Err(Refused::new(Why::Missing, format!("no group {id:?}"))),
    })
}

/// The actor's role in a group: what each change checks it against.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    fn of(role: &str) -> Self {
        match role {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            _ => Role::Member,
        }
    }

    /// Owners and admins manage members and the name.
    fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// Only members change a group; the admin actor (the admin API) acts as
/// its owner without being a member.
fn authorise(actor: &str, group: &GroupInfo) -> Result<Role, Refused> {
    if actor == crate::wire::ids::ADMIN_ACTOR {
        return Ok(Role::Owner);
    }
    match group.members.iter().find(|m| m.user_id == actor) {
        Some(m) => Ok(Role::of(&m.role)),
        None => Err(Refused::new(
            Why::NotAllowed,
            format!("you are not a member of group {:?}", group.id),
        )),
    }
}

/// What a change will write, decided before anything is written.
#[derive(Debug, PartialEq)]
enum Plan {
    /// A new group owned by the actor, with `invited` as members.
    Create {
        name: String,
        invited: Vec<String>,
    },
    Add {
        new: Vec<String>,
    },
    Remove {
        removed: Vec<String>,
    },
    Leave {
        after: AfterLeave,
    },
    Dissolve,
    Rename {
        name: String,
    },
    SetAdmin {
        user: String,
        admin: bool,
    },
}

/// What becomes of a group its member leaves.
#[derive(Debug, PartialEq)]
enum AfterLeave {
    /// The last member left: the group is dissolved.
    Dissolved,
    /// The owner left: ownership passes on.
    NewOwner(String),
    Unchanged,
}

impl Plan {
    /// Users the plan makes members, who must exist (checked in one
    /// statement before anything is written).
    fn must_exist(&self) -> Option<&[String]> {
        match self {
            Plan::Create { invited, .. } => Some(invited),
            Plan::Add { new } => Some(new),
            _ => None,
        }
    }
}

/// A new group: a valid name, and everyone named once (the actor is the owner).
fn plan_create(actor: &str, name: &str, invited: &[String]) -> Result<Plan, Refused> {
    let name = check_name(name)?;
    let invited = dedup(invited).into_iter().filter(|u| u != actor).collect();
    Ok(Plan::Create { name, invited })
}

/// A change to an existing group by an actor with `role` in it.
fn plan_change(
    actor: &str,
    change: &GroupChange,
    group: &GroupInfo,
    role: Role,
) -> Result<Plan, Refused> {
    let refuse = |why, text: &str| Err(Refused::new(why, text));
    match change {
        GroupChange::Create { .. } => unreachable!("a new group is planned by plan_create"),
        GroupChange::Add { members, .. } => plan_add(members, group),
        GroupChange::Remove { members, .. } => plan_remove(members, group, role),
        GroupChange::Leave { .. } => Ok(Plan::Leave {
            after: after_leave(actor, group, role),
        }),
        GroupChange::Dissolve { .. } if role != Role::Owner => {
            refuse(Why::NotAllowed, "only the owner can dissolve the group")
        }
        GroupChange::Dissolve { .. } => Ok(Plan::Dissolve),
        GroupChange::Rename { .. } if !role.manages() => refuse(
            Why::NotAllowed,
            "only the owner or an admin can rename the group",
        ),
        GroupChange::Rename { name, .. } => Ok(Plan::Rename {
            name: check_name(name)?,
        }),
        GroupChange::SetAdmin { user, admin, .. } => plan_set_admin(user, *admin, group, role),
    }
}

/// Any member may add people; those already in are left out, and a change
/// that adds no one is refused.
fn plan_add(invited: &[String], group: &GroupInfo) -> Result<Plan, Refused> {
    let new: Vec<String> = dedup(invited)
        .into_iter()
        .filter(|u| !group.members.iter().any(|m| &m.user_id == u))
        .collect();
    if new.is_empty() {
        return Err(Refused::new(
            Why::Invalid,
            "everyone named is already a member",
        ));
    }
    Ok(Plan::Add { new })
}

/// Owners and admins remove members; only the owner removes an admin, and
/// no one removes the owner. The first offending name is the one refused.
fn plan_remove(removed: &[String], group: &GroupInfo, role: Role) -> Result<Plan, Refused> {
    if !role.manages() {
        return Err(Refused::new(
            Why::NotAllowed,
            "only the owner or an admin can remove members",
        ));
    }
    let removed = dedup(removed);
    for u in &removed {
        match group.members.iter().find(|m| &m.user_id == u) {
            None => {
                return Err(Refused::new(
                    Why::Missing,
                    format!("{u:?} is not a member of group {:?}", group.id),
                ));
            }
            Some(m) if m.role == "owner" => {
                return Err(Refused::new(
                    Why::NotAllowed,
                    "the owner cannot be removed; the owner can dissolve the group",
                ));
            }
            Some(m) if m.role == "admin" && role != Role::Owner => {
                return Err(Refused::new(
                    Why::NotAllowed,
                    "only the owner can remove an admin",
                ));
            }
            Some(_) => {}
        }
    }
    if removed.is_empty() {
        return Err(Refused::new(
            Why::Invalid,
            "name at least one member to remove",
        ));
    }
    Ok(Plan::Remove { removed })
}

/// The last one out dissolves the group; a leaving owner hands it to the
/// first admin, else the longest-standing member (the order `info_in` lists).
fn after_leave(actor: &str, group: &GroupInfo, role: Role) -> AfterLeave {
    let mut rest = group.members.iter().filter(|m| m.user_id != actor);
    match rest.next() {
        None => AfterLeave::Dissolved,
        Some(heir) if role == Role::Owner => AfterLeave::NewOwner(heir.user_id.clone()),
        Some(_) => AfterLeave::Unchanged,
    }
}

/// Only the owner appoints and dismisses admins, of members other than itself.
fn plan_set_admin(user: &str, admin: bool, group: &GroupInfo, role: Role) -> Result<Plan, Refused> {
    if role != Role::Owner {
        return Err(Refused::new(
            Why::NotAllowed,
            "only the owner can appoint or dismiss admins",
        ));
    }
    match group.members.iter().find(|m| m.user_id == user) {
        None => Err(Refused::new(
            Why::Missing,
            format!("{user:?} is not a member of group {:?}", group.id),
        )),
        Some(m) if m.role == "owner" => {
            Err(Refused::new(Why::Invalid, "the owner's role cannot change"))
        }
        Some(_) => Ok(Plan::SetAdmin {
            user: user.to_owned(),
            admin,
        }),
    }
}

fn check_name(name: &str) -> Result<String, Refused> {
    let name = name.trim();
    crate::wire::limits::check_text("a group name", name, crate::wire::limits::MAX_GROUP_NAME)
        .map_err(|e| Refused::new(Why::Invalid, e))?;
    Ok(name.to_owned())
}

/// Each user once, in the order named; empty names dropped.
fn dedup(users: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    users
        .iter()
        .filter(|u| !u.is_empty() && seen.insert(u.as_str()))
        .cloned()
        .collect()
}

/// Writes the plan: a few statements whatever the number of members.
async fn write(conn: &mut Tx<'_>, actor: &str, group: &str, plan: &Plan, now: i64) -> Result<()> {
    match plan {
        Plan::Create { name, invited } => {
            on_tx!(conn, c => {
                sqlx::query("INSERT INTO groups (id, name, owner, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(group)
                    .bind(name)
                    .bind(actor)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)")
                    .bind(group)
                    .bind(actor)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
            });
            insert_members(conn, group, invited, now).await?;
        }
        Plan::Add { new } => insert_members(conn, group, new, now).await?,
        Plan::Remove { removed } => delete_members(conn, group, removed).await?,
        Plan::Leave { after } => {
            delete_members(conn, group, &[actor.to_owned()]).await?;
            match after {
                AfterLeave::Dissolved => mark_dissolved(conn, group, now).await?,
                AfterLeave::NewOwner(heir) => make_owner(conn, group, heir).await?,
                AfterLeave::Unchanged => {}
            }
        }
        Plan::Dissolve => {
            on_tx!(conn, c => sqlx::query("DELETE FROM group_members WHERE group_id = $1")
                .bind(group)
                .execute(&mut *c)
                .await.map(|r| r.rows_affected()))?;
            mark_dissolved(conn, group, now).await?;
        }
        Plan::Rename { name } => {
            on_tx!(conn, c => sqlx::query("UPDATE groups SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(group)
                .execute(&mut *c)
                .await.map(|r| r.rows_affected()))?;
        }
        Plan::SetAdmin { user, admin } => {
            on_tx!(conn, c => sqlx::query("UPDATE group_members SET role = $1 WHERE group_id = $2 AND user_id = $3")
                .bind(if *admin { "admin" } else { "member" })
                .bind(group)
                .bind(user)
                .execute(&mut *c)
                .await.map(|r| r.rows_affected()))?;
        }
    }
    Ok(())
}

/// The notification of a change and who gets it: the members before the
/// change and anyone it adds. The removed hear of it too, so their
/// timeline shows why it stopped.
fn announce(actor: &str, plan: Plan, members: Vec<String>) -> (Value, Vec<String>) {
    match plan {
        Plan::Create { name, invited } => {
            let all: Vec<String> = std::iter::once(actor.to_owned()).chain(invited).collect();
            (
                json!({"type": "notification", "kind": "created", "actor": actor, "name": name, "members": all}),
                all,
            )
        }
        Plan::Add { new } => (
            json!({"type": "notification", "kind": "member_added", "actor": actor, "members": new}),
            members.into_iter().chain(new).collect(),
        ),
        Plan::Remove { removed } => (
            json!({"type": "notification", "kind": "member_removed", "actor": actor, "members": removed}),
            members,
        ),
        Plan::Leave { after } => {
            let mut note =
                json!({"type": "notification", "kind": "left", "actor": actor, "members": [actor]});
            match after {
                AfterLeave::Dissolved => note["dissolved"] = json!(true),
                AfterLeave::NewOwner(heir) => note["owner"] = json!(heir),
                AfterLeave::Unchanged => {}
            }
            (note, members)
        }
        Plan::Dissolve => (
            json!({"type": "notification", "kind": "dissolved", "actor": actor}),
            members,
        ),
        Plan::Rename { name } => (
            json!({"type": "notification", "kind": "renamed", "actor": actor, "name": name}),
            members,
        ),
        Plan::SetAdmin { user, admin } => {
            let kind = if admin {
                "admin_added"
            } else {
                "admin_removed"
            };
            (
                json!({"type": "notification", "kind": kind, "actor": actor, "members": [user]}),
                members,
            )
        }
    }
}

async fn unknown_users(conn: &mut Tx<'_>, users: &[String]) -> Result<Vec<String>> {
    let known: Vec<String> = match conn {
        Tx::Sqlite(c) => {
            sqlx::query_scalar("SELECT id FROM users WHERE id IN (SELECT value FROM json_each($1))")
                .bind(json!(users).to_string())
                .fetch_all(&mut **c)
                .await?
        }
        Tx::Postgres(c) => {
            sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)")
                .bind(users)
                .fetch_all(&mut **c)
                .await?
        }
    };
    let known: HashSet<String> = known.into_iter().collect();
    Ok(users
        .iter()
        .filter(|u| !known.contains(*u))
        .cloned()
        .collect())
}

async fn insert_members(conn: &mut Tx<'_>, group: &str, users: &[String], now: i64) -> Result<()> {
    match conn {
        Tx::Sqlite(c) => sqlx::query(
            "INSERT INTO group_members (group_id, user_id, role, joined_at)
                 SELECT $1, value, 'member', $2 FROM json_each($3)",
        )
        .bind(group)
        .bind(now)
        .bind(json!(users).to_string())
        .execute(&mut **c)
        .await?
        .rows_affected(),
        Tx::Postgres(c) => sqlx::query(
            "INSERT INTO group_members (group_id, user_id, role, joined_at)
                 SELECT $1, u, 'member', $2 FROM UNNEST($3::text[]) u",
        )
        .bind(group)
        .bind(now)
        .bind(users)
        .execute(&mut **c)
        .await?
        .rows_affected(),
    };
    Ok(())
}

async fn delete_members(conn: &mut Tx<'_>, group: &str, users: &[String]) -> Result<()> {
    match conn {
        Tx::Sqlite(c) => {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id IN (SELECT value FROM json_each($2))")
                .bind(group)
                .bind(json!(users).to_string())
                .execute(&mut **c)
                .await?
                .rows_affected()
        }
        Tx::Postgres(c) => {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = ANY($2)")
                .bind(group)
                .bind(users)
                .execute(&mut **c)
                .await?
                .rows_affected()
        }
    };
    Ok(())
}

async fn mark_dissolved(conn: &mut Tx<'_>, group: &str, now: i64) -> Result<()> {
    on_tx!(conn, c => sqlx::query("UPDATE groups SET dissolved_at = $1 WHERE id = $2")
        .bind(now)
        .bind(group)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GroupMember;

    /// "g1": alice owns it, bob is an admin, carol and dave are members.
    fn team() -> GroupInfo {
        let member = |user: &str, role: &str| GroupMember {
            user_id: user.into(),
            role: role.into(),
        };
        GroupInfo {
            id: "g1".into(),
            name: "team".into(),
            owner: "alice".into(),
            created_at: 0,
            dissolved_at: None,
            members: vec![
                member("alice", "owner"),
                member("bob", "admin"),
                member("carol", "member"),
                member("dave", "member"),
            ],
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Plans `change` by `actor` on [`team`] as `decide` does.
    fn plan(actor: &str, change: GroupChange) -> Result<Plan, Refused> {
        let group = team();
        let role = authorise(actor, &group)?;
        plan_change(actor, &change, &group, role)
    }

    fn refusal(why: Why, text: &str) -> Result<Plan, Refused> {
        Err(Refused::new(why, text))
    }

    #[test]
    fn only_members_change_a_group_and_the_admin_actor_owns_it() {
        let group = team();
        assert_eq!(
            authorise("zed", &group),
            Err(Refused::new(
                Why::NotAllowed,
                "you are not a member of group \"g1\"".to_owned()
            ))
        );
        assert_eq!(authorise("bob", &group), Ok(Role::Admin));
        assert_eq!(authorise("carol", &group), Ok(Role::Member));
        assert_eq!(
            authorise(crate::wire::ids::ADMIN_ACTOR, &group),
            Ok(Role::Owner)
        );
    }

    #[test]
    fn adding_leaves_out_members_and_refuses_when_no_one_is_new() {
        let add = |members: &[&str]| GroupChange::Add {
            group: "g1".into(),
            members: names(members),
        };
        assert_eq!(
            plan("carol", add(&["bob", "carol"])),
            refusal(Why::Invalid, "everyone named is already a member")
        );
        assert_eq!(
            plan("carol", add(&["erin", "bob", "", "erin", "frank"])),
            Ok(Plan::Add {
                new: names(&["erin", "frank"])
            })
        );
    }

    #[test]
    fn removing_refuses_plain_members_the_owner_and_admins_unless_by_the_owner() {
        let remove = |members: &[&str]| GroupChange::Remove {
            group: "g1".into(),
            members: names(members),
        };
        assert_eq!(
            plan("carol", remove(&["dave"])),
            refusal(
                Why::NotAllowed,
                "only the owner or an admin can remove members"
            )
        );
        assert_eq!(
            plan("bob", remove(&["dave", "alice"])),
            refusal(
                Why::NotAllowed,
                "the owner cannot be removed; the owner can dissolve the group"
            )
        );
        assert_eq!(
            plan("bob", remove(&["bob"])),
            refusal(Why::NotAllowed, "only the owner can remove an admin")
        );
        assert_eq!(
            plan("bob", remove(&["zed", "alice"])),
            refusal(Why::Missing, "\"zed\" is not a member of group \"g1\""),
            "the first offending name is the one refused"
        );
        assert_eq!(
            plan("bob", remove(&[""])),
            refusal(Why::Invalid, "name at least one member to remove")
        );
        assert_eq!(
            plan("alice", remove(&["bob", "carol", "bob"])),
            Ok(Plan::Remove {
                removed: names(&["bob", "carol"])
            })
        );
    }

    #[test]
    fn only_the_owner_sets_admins_and_never_on_itself() {
        let set = |user: &str| GroupChange::SetAdmin {
            group: "g1".into(),
            user: user.into(),
            admin: true,
        };
        assert_eq!(
            plan("bob", set("carol")),
            refusal(
                Why::NotAllowed,
                "only the owner can appoint or dismiss admins"
            )
        );
        assert_eq!(
            plan("alice", set("alice")),
            refusal(Why::Invalid, "the owner's role cannot change")
        );
        assert_eq!(
            plan("alice", set("zed")),
            refusal(Why::Missing, "\"zed\" is not a member of group \"g1\"")
        );
        assert_eq!(
            plan("alice", set("carol")),
            Ok(Plan::SetAdmin {
                user: "carol".into(),
                admin: true
            })
        );
    }

    #[test]
    fn renaming_and_dissolving_need_their_roles_and_a_valid_name() {
        let rename = |name: &str| GroupChange::Rename {
            group: "g1".into(),
            name: name.into(),
        };
        let dissolve = GroupChange::Dissolve { group: "g1".into() };
        assert_eq!(
            plan("carol", rename("x")),
            refusal(
                Why::NotAllowed,
                "only the owner or an admin can rename the group"
            )
        );
        assert_eq!(
            plan("bob", rename("  ")),
            refusal(Why::Invalid, "a group name must not be empty")
        );
        assert_eq!(
            plan("bob", rename(" new ")),
            Ok(Plan::Rename { name: "new".into() })
        );
        assert_eq!(
            plan("bob", dissolve.clone()),
            refusal(Why::NotAllowed, "only the owner can dissolve the group")
        );
        assert_eq!(plan("alice", dissolve), Ok(Plan::Dissolve));
    }

    #[test]
    fn a_leaving_owner_hands_over_and_the_last_one_out_dissolves() {
        let group = team();
        assert_eq!(
            after_leave("alice", &group, Role::Owner),
            AfterLeave::NewOwner("bob".into())
        );
        assert_eq!(
            after_leave("carol", &group, Role::Member),
            AfterLeave::Unchanged
        );
        let alone = GroupInfo {
            members: group.members[..1].to_vec(),
            ..team()
        };
        assert_eq!(
            after_leave("alice", &alone, Role::Owner),
            AfterLeave::Dissolved
        );
    }

    #[test]
    fn a_new_group_names_everyone_once_and_the_creator_is_not_invited() {
        assert_eq!(
            plan_create("alice", " team ", &names(&["bob", "alice", "bob", ""])),
            Ok(Plan::Create {
                name: "team".into(),
                invited: names(&["bob"])
            })
        );
        assert_eq!(
            plan_create("alice", "", &[]),
            refusal(Why::Invalid, "a group name must not be empty")
        );
        assert!(
            plan_create("alice", " team ", &[])
                .unwrap()
                .must_exist()
                .is_some_and(<[String]>::is_empty),
            "the invited are checked even when there are none"
        );
    }

    #[test]
    fn notifications_reach_the_members_before_and_the_members_added() {
        let members = || names(&["alice", "bob"]);
        let (note, to) = announce(
            "alice",
            Plan::Add {
                new: names(&["carol"]),
            },
            members(),
        );
        assert_eq!(
            note,
            json!({"type": "notification", "kind": "member_added", "actor": "alice", "members": ["carol"]})
        );
        assert_eq!(to, names(&["alice", "bob", "carol"]));
        let (_, to) = announce(
            "alice",
            Plan::Remove {
                removed: names(&["bob"]),
            },
            members(),
        );
        assert_eq!(to, members(), "the removed hear of it too");
        let (note, _) = announce(
            "alice",
            Plan::Leave {
                after: AfterLeave::NewOwner("bob".into()),
            },
            members(),
        );
        assert_eq!(
            note,
            json!({"type": "notification", "kind": "left", "actor": "alice", "members": ["alice"], "owner": "bob"})
        );
        let (note, to) = announce(
            "alice",
            Plan::Create {
                name: "team".into(),
                invited: names(&["bob"]),
            },
            Vec::new(),
        );
        assert_eq!(note["members"], json!(["alice", "bob"]));
        assert_eq!(to, members());
    }
}
