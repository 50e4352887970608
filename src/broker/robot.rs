//! The built-in `robot` user: answers every text message sent to it, so one
//! person can try the whole flow alone.

use serde_json::{Value, json};

use super::Broker;
use super::writer::{Replier, WriteOp};
use crate::store::NewMessage;
use crate::wire::ws::{ChatMessage, ConvType, Conversation};

pub use crate::wire::ids::ROBOT;

/// Connects the robot to the hub if the `robot` user exists.
pub async fn spawn(broker: Broker) -> anyhow::Result<()> {
    if broker.store.user(ROBOT).await?.is_none() {
        return Ok(());
    }
    let connect = |broker: &Broker| {
        let (handle, queue) = broker.hub.handle();
        let registered = broker.hub.register(ROBOT, handle.clone(), "robot", 0);
        registered.map(|_| (handle, queue))
    };
    let (mut handle, mut queue) =
        connect(&broker).map_err(|_| anyhow::anyhow!("the robot cannot join the hub"))?;
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                f = queue.recv() => match f { Some(f) => f, None => return },
                _ = broker.shutdown.cancelled() => return,
                // Too far behind (frames were dropped): start over with an
                // empty queue rather than stay deaf.
                _ = handle.kick.cancelled() => {
                    broker.hub.unregister(ROBOT, handle.id);
                    match connect(&broker) {
                        Ok(fresh) => (handle, queue) = fresh,
                        Err(_) => return,
                    }
                    continue;
                }
            };
            let Ok(v) = serde_json::from_str::<Value>(frame.as_str()) else {
                continue;
            };
            // Acks and errors of the robot's own sends come here too; only messages matter.
            if v["op"] != "msg" {
                continue;
            }
            let Ok(msg) = serde_json::from_value::<ChatMessage>(v["message"].clone()) else {
                continue;
            };
            let Some(reply) = answer(&msg) else { continue };
            let send = WriteOp::Send {
                msg: reply,
                id: None,
                reply: Replier::Conn(handle.clone()),
            };
            if broker.writer.send(send).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// The robot's reply to a message, if it answers it.
fn answer(msg: &ChatMessage) -> Option<NewMessage> {
    if msg.from == ROBOT || msg.conv.kind != ConvType::Single {
        return None;
    }
    let text = msg.content.get("text").and_then(Value::as_str)?;
    Some(NewMessage {
        sender: ROBOT.into(),
        conv: Conversation {
            kind: ConvType::Single,
            target: msg.from.clone(),
        },
        content: json!({"type": "text", "text": format!("echo: {text} (I am imctl's robot: I answer every text message)")}),
        // Deterministic, so a replayed message never gets two answers.
        client_msg_id: Some(format!("robot-re-{}", msg.msg_id)),
        recipients: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(from: &str, kind: ConvType, content: Value) -> ChatMessage {
        ChatMessage {
            msg_id: "m7".into(),
            client_msg_id: None,
            conv: Conversation {
                kind,
                target: ROBOT.into(),
            },
            from: from.into(),
            content,
            server_time: 0,
        }
    }

    #[test]
    fn answers_text_only_and_never_itself() {
        let reply = answer(&msg(
            "alice",
            ConvType::Single,
            json!({"type":"text","text":"hi"}),
        ))
        .unwrap();
        assert_eq!(reply.conv.target, "alice");
        assert!(
            reply.content["text"]
                .as_str()
                .unwrap()
                .starts_with("echo: hi")
        );
        assert_eq!(reply.client_msg_id.as_deref(), Some("robot-re-m7"));
        assert!(
            answer(&msg(
                ROBOT,
                ConvType::Single,
                json!({"type":"text","text":"hi"})
            ))
            .is_none()
        );
        assert!(
            answer(&msg(
                "alice",
                ConvType::Group,
                json!({"type":"text","text":"hi"})
            ))
            .is_none()
        );
        assert!(
            answer(&msg(
                "alice",
                ConvType::Single,
                json!({"type":"image","url":"u","w":1,"h":1,"size":1})
            ))
            .is_none()
        );
    }
}
