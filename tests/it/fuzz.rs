//! Fuzzing on stable Rust: property tests for every wire type a client can
//! send (WebSocket requests, HTTP bodies), and a storm of generated and
//! mutated frames thrown at a live broker while a well-behaved pair chats.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use imctl::wire::http::*;
use imctl::wire::limits;
use imctl::wire::ws::*;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common;

// ---- Generators -------------------------------------------------------------

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,6}|id|op|conv|type", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The shape of a wire type's JSON, to generate well-formed values of it.
#[derive(Clone, Copy, Debug)]
enum K {
    Str,
    I32,
    I64,
    U16,
    U32,
    U64,
    F64,
    Bool,
    /// `true` only: a flag that is omitted when false.
    True,
    Any,
    /// One of these strings.
    Tag(&'static [&'static str]),
    /// An optional field: absent or a value.
    Opt(&'static K),
    List(&'static K),
    Obj(&'static [(&'static str, K)]),
    OneOf(&'static [K]),
}

/// A well-formed value of `k`; with `mutate`, fields are also dropped or
/// replaced by arbitrary JSON, and junk fields added.
fn gen_value(k: K, mutate: bool) -> BoxedStrategy<Value> {
    match k {
        K::Str => any::<String>().prop_map(Value::from).boxed(),
        K::I32 => any::<i32>().prop_map(Value::from).boxed(),
        K::I64 => any::<i64>().prop_map(Value::from).boxed(),
        K::U16 => any::<u16>().prop_map(Value::from).boxed(),
        K::U32 => any::<u32>().prop_map(Value::from).boxed(),
        K::U64 => any::<u64>().prop_map(Value::from).boxed(),
        K::F64 => (-1e9f64..1e9).prop_map(Value::from).boxed(),
        K::Bool => any::<bool>().prop_map(Value::from).boxed(),
        K::True => Just(Value::Bool(true)).boxed(),
        K::Any => arb_json().boxed(),
        K::Tag(tags) => prop::sample::select(tags).prop_map(Value::from).boxed(),
        K::Opt(inner) => gen_value(*inner, mutate).boxed(),
        K::List(inner) => prop::collection::vec(gen_value(*inner, mutate), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        K::OneOf(kinds) => {
            let all: Vec<_> = kinds.iter().map(|k| gen_value(*k, mutate)).collect();
            prop::strategy::Union::new(all).boxed()
        }
        K::Obj(fields) => {
            let each: Vec<BoxedStrategy<Option<Value>>> =
                fields.iter().map(|(_, k)| field(*k, mutate)).collect();
            let names: Vec<&'static str> = fields.iter().map(|(n, _)| *n).collect();
            let junk = if mutate {
                prop::option::weighted(0.1, ("[a-z]{1,6}", arb_json())).boxed()
            } else {
                Just(None).boxed()
            };
            (each, junk)
                .prop_map(move |(values, junk)| {
                    let mut obj: serde_json::Map<String, Value> = names
                        .iter()
                        .zip(values)
                        .filter_map(|(n, v)| Some(((*n).to_owned(), v?)))
                        .collect();
                    if let Some((k, v)) = junk {
                        obj.insert(k, v);
                    }
                    Value::Object(obj)
                })
                .boxed()
        }
    }
}

/// One field of an object: `None` when absent.
fn field(k: K, mutate: bool) -> BoxedStrategy<Option<Value>> {
    let value = gen_value(k, mutate);
    let present = match k {
        K::Opt(_) => prop::option::of(value).boxed(),
        _ => value.prop_map(Some).boxed(),
    };
    if mutate {
        prop_oneof![
            8 => present,
            1 => Just(None),
            1 => arb_json().prop_map(Some),
        ]
        .boxed()
    } else {
        present
    }
}

// ---- Shapes of the wire types ----------------------------------------------

const OPT_STR: K = K::Opt(&K::Str);
const CONV: K = K::Obj(&[("type", K::Tag(&["single", "group"])), ("target", K::Str)]);
const CONTENT: K = K::OneOf(&[
    K::Obj(&[("type", K::Tag(&["text"])), ("text", K::Str)]),
    K::Obj(&[
        ("type", K::Tag(&["image"])),
        ("url", K::Str),
        ("w", K::U32),
        ("h", K::U32),
        ("size", K::U64),
    ]),
    K::Obj(&[
        ("type", K::Tag(&["file"])),
        ("url", K::Str),
        ("name", K::Str),
        ("size", K::U64),
    ]),
    K::Obj(&[
        ("type", K::Tag(&["video"])),
        ("url", K::Str),
        ("w", K::U32),
        ("h", K::U32),
        ("duration", K::F64),
        ("size", K::U64),
    ]),
    K::Obj(&[
        ("type", K::Tag(&["location"])),
        ("title", K::Str),
        ("lat", K::F64),
        ("lng", K::F64),
    ]),
    K::Obj(&[
        ("type", K::Tag(&["sticker"])),
        ("url", K::Str),
        ("w", K::Opt(&K::U32)),
        ("h", K::Opt(&K::U32)),
    ]),
    K::Obj(&[("type", K::Tag(&["custom"])), ("data", K::Any)]),
]);
const CHAT_MESSAGE: K = K::Obj(&[
    ("msgId", K::Str),
    ("clientMsgId", OPT_STR),
    ("conv", CONV),
    ("from", K::Str),
    ("content", K::Any),
    ("serverTime", K::I64),
]);
const USER_SUMMARY: K = K::Obj(&[
    ("userId", K::Str),
    ("displayName", K::Str),
    ("mobile", OPT_STR),
    ("portrait", OPT_STR),
]);
const SCANNED: K = K::Obj(&[
    ("userId", K::Str),
    ("userName", K::Str),
    ("portrait", OPT_STR),
]);
const LOGIN_RESULT: K = K::Obj(&[
    ("userId", K::Str),
    ("token", K::Str),
    ("register", K::Bool),
    ("userName", OPT_STR),
    ("portrait", OPT_STR),
    ("routeUrl", OPT_STR),
]);
const SMS_ENTRY: K = K::Obj(&[
    ("mobile", K::Str),
    ("code", K::Str),
    ("text", K::Str),
    ("sentAt", K::I64),
    ("expiresAt", K::I64),
]);
const PC_SESSION_INFO: K = K::Obj(&[
    ("token", K::Str),
    ("qrText", K::Str),
    ("status", K::I32),
    ("statusName", K::Str),
    ("quickLogin", K::Bool),
    ("createdAt", K::I64),
    ("ageMs", K::I64),
    ("expiresInMs", K::I64),
    ("clientId", K::Str),
    ("platform", K::I32),
    ("deviceName", K::Str),
    ("scanner", K::Opt(&USER_SUMMARY)),
]);
const CONN_INFO: K = K::Obj(&[
    ("userId", K::Str),
    ("clientId", K::Str),
    ("platform", K::I32),
    ("since", K::I64),
]);
const STACK_STATUS: K = K::Obj(&[
    ("version", K::Str),
    ("pid", K::U32),
    ("startedAt", K::I64),
    ("uptimeMs", K::I64),
    ("appServer", K::Str),
    ("broker", K::Str),
    ("wsUrl", K::Str),
    ("routeUrl", K::Str),
    ("database", OPT_STR),
    ("users", K::U32),
    ("connections", K::U32),
    ("qrSessions", K::U32),
    ("clients", CLIENT_SETTINGS),
]);
const MOBILE_SETTINGS: K = K::Obj(&[("APP_SERVER_ADDRESS", K::Str), ("IM_SERVER_HOST", K::Str)]);
const CLIENT_SETTINGS: K = K::Obj(&[
    ("android", MOBILE_SETTINGS),
    ("ios", MOBILE_SETTINGS),
    (
        "vueChat",
        K::Obj(&[
            ("APP_SERVER", K::Str),
            ("IM_SERVER_HOST", K::Str),
            ("ROUTE_PORT", K::U16),
            ("USE_WSS", K::Bool),
            ("WS_PATH", K::Str),
        ]),
    ),
]);

/// Serializes `T` back after decoding: the types both sides share.
type RoundTrip = fn(&Value) -> Result<Value, String>;
/// Only decoded: the requests clients send.
type DecodeOnly = fn(&Value) -> Result<(), String>;

fn round_trip<T: Serialize + DeserializeOwned>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let out = serde_json::to_value(&t).map_err(|e| e.to_string())?;
    // Decoding what we encoded must give the same encoding again.
    let again: T = serde_json::from_value(out.clone()).map_err(|e| format!("re-decode: {e}"))?;
    let again = serde_json::to_value(&again).map_err(|e| e.to_string())?;
    if again != out {
        return Err(format!("unstable encoding: {out} then {again}"));
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(v.clone())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Every HTTP body type (and the broker's `/route` bodies), with its shape.
fn http_bodies() -> Vec<(&'static str, K, RoundTrip)> {
    vec![
        (
            // `#[serde(default)]` on the generic `result` needs `T: Default`,
            // so clients decode the envelope with a `Value` result.
            "ApiResponse<LoginResult>",
            K::Obj(&[
                ("code", K::I32),
                ("message", K::Str),
                ("result", K::Opt(&LOGIN_RESULT)),
            ]),
            round_trip::<ApiResponse<Value>>,
        ),
        (
            "ApiResponse<any>",
            K::Obj(&[
                ("code", K::I32),
                ("message", K::Str),
                ("result", K::Opt(&K::Any)),
            ]),
            round_trip::<ApiResponse<Value>>,
        ),
        (
            "SendCodeRequest",
            K::Obj(&[("mobile", K::Str)]),
            round_trip::<SendCodeRequest>,
        ),
        (
            "LoginRequest",
            K::Obj(&[
                ("mobile", K::Str),
                ("code", K::Str),
                ("clientId", K::Str),
                ("platform", K::I32),
            ]),
            round_trip::<LoginRequest>,
        ),
        ("LoginResult", LOGIN_RESULT, round_trip::<LoginResult>),
        (
            "ClientConfig",
            K::Obj(&[
                ("appServer", K::Str),
                ("routeUrl", K::Str),
                ("version", K::Str),
                ("maxFrame", K::U32),
            ]),
            round_trip::<ClientConfig>,
        ),
        (
            "PcSessionRequest",
            K::Obj(&[
                ("clientId", K::Str),
                ("platform", K::I32),
                ("device_name", OPT_STR),
                ("token", OPT_STR),
                ("flag", K::Opt(&K::I32)),
                ("userId", OPT_STR),
            ]),
            round_trip::<PcSessionRequest>,
        ),
        (
            "PcSessionResult",
            K::Obj(&[
                ("token", K::Str),
                ("status", K::I32),
                ("expired", K::I64),
                ("platform", K::I32),
                ("device_name", K::Str),
                ("userId", OPT_STR),
                ("qrText", OPT_STR),
            ]),
            round_trip::<PcSessionResult>,
        ),
        ("ScannedResult", SCANNED, round_trip::<ScannedResult>),
        (
            "PollTimeout",
            K::Obj(&[("status", K::I32)]),
            round_trip::<PollTimeout>,
        ),
        (
            "QrStatusEvent",
            K::Obj(&[
                ("status", K::I32),
                ("statusName", K::Str),
                ("expiresInMs", K::I64),
                ("scanner", K::Opt(&SCANNED)),
            ]),
            round_trip::<QrStatusEvent>,
        ),
        (
            "ConfirmPcRequest",
            K::Obj(&[
                ("token", K::Str),
                ("user_id", OPT_STR),
                ("quick_login", K::Opt(&K::I32)),
            ]),
            round_trip::<ConfirmPcRequest>,
        ),
        (
            "CancelPcRequest",
            K::Obj(&[("token", K::Str)]),
            round_trip::<CancelPcRequest>,
        ),
        ("SmsEntry", SMS_ENTRY, round_trip::<SmsEntry>),
        (
            "PcSessionInfo",
            PC_SESSION_INFO,
            round_trip::<PcSessionInfo>,
        ),
        ("UserSummary", USER_SUMMARY, round_trip::<UserSummary>),
        ("StackStatus", STACK_STATUS, round_trip::<StackStatus>),
        (
            "DevSnapshot",
            K::Obj(&[
                ("status", STACK_STATUS),
                ("sms", K::List(&SMS_ENTRY)),
                ("pcSessions", K::List(&PC_SESSION_INFO)),
                ("connections", K::List(&CONN_INFO)),
                ("messages", K::List(&CHAT_MESSAGE)),
                ("users", K::List(&USER_SUMMARY)),
            ]),
            round_trip::<DevSnapshot>,
        ),
        ("ConnInfo", CONN_INFO, round_trip::<ConnInfo>),
        (
            "DevPhoneAction",
            K::Obj(&[("userId", K::Str)]),
            round_trip::<DevPhoneAction>,
        ),
        ("Empty", K::Obj(&[]), round_trip::<Empty>),
        (
            "Uploaded",
            K::Obj(&[("url", K::Str), ("size", K::I64), ("contentType", K::Str)]),
            round_trip::<Uploaded>,
        ),
        (
            "DevError",
            K::Obj(&[("error", K::Str)]),
            round_trip::<DevError>,
        ),
        (
            "RouteRequest",
            K::Obj(&[
                ("userId", OPT_STR),
                ("clientId", OPT_STR),
                ("token", K::Str),
            ]),
            round_trip::<RouteRequest>,
        ),
        (
            "RouteResult",
            K::Obj(&[
                ("host", K::Str),
                ("port", K::U16),
                ("wsUrl", K::Str),
                ("node", K::Str),
            ]),
            round_trip::<RouteResult>,
        ),
    ]
}

/// The WebSocket types that go both ways or that the server sends.
fn ws_shared() -> Vec<(&'static str, K, RoundTrip)> {
    vec![
        ("Conversation", CONV, round_trip::<Conversation>),
        ("Content", CONTENT, round_trip::<Content>),
        ("ChatMessage", CHAT_MESSAGE, round_trip::<ChatMessage>),
        (
            "InboxEntry",
            K::Obj(&[("seq", K::I64), ("message", CHAT_MESSAGE)]),
            round_trip::<InboxEntry>,
        ),
        (
            "Ack",
            K::Obj(&[
                ("id", K::Opt(&K::U64)),
                ("op", K::Tag(&["ack"])),
                ("code", K::I32),
                ("msgId", K::Str),
                ("serverTime", K::I64),
                ("seq", K::I64),
                ("duplicate", K::Opt(&K::True)),
            ]),
            round_trip::<Ack>,
        ),
        (
            "PcLoginRequest",
            K::Obj(&[
                ("op", K::Tag(&["pc_login_request"])),
                ("token", K::Str),
                ("platform", K::I32),
                ("deviceName", K::Str),
                ("clientId", OPT_STR),
                ("expiresInMs", K::I64),
            ]),
            round_trip::<Push>,
        ),
        (
            "ErrorFrame",
            K::Obj(&[
                ("id", K::Opt(&K::U64)),
                ("op", K::Tag(&["error"])),
                ("code", K::I32),
                ("message", K::Str),
            ]),
            round_trip::<ErrorFrame>,
        ),
    ]
}

/// Every request a client sends: its op, shape, and decoder as the broker
/// uses it (`on_text` parses the frame into a `Value`, checks `id` and `op`,
/// then decodes the op's type from the whole frame).
fn ws_requests() -> Vec<(&'static str, K, DecodeOnly)> {
    const MEMBERS: K = K::List(&K::Str);
    vec![
        (
            "connect",
            K::Obj(&[
                ("token", OPT_STR),
                ("clientId", OPT_STR),
                ("platform", K::Opt(&K::I32)),
            ]),
            decode::<ConnectReq>,
        ),
        (
            "send",
            K::Obj(&[
                ("conv", CONV),
                ("content", CONTENT),
                ("clientMsgId", OPT_STR),
            ]),
            decode_send,
        ),
        (
            "sync",
            K::Obj(&[("since", K::Opt(&K::I64)), ("limit", K::Opt(&K::U32))]),
            decode::<SyncReq>,
        ),
        ("recv", K::Obj(&[("upTo", K::I64)]), decode::<RecvReq>),
        (
            "history",
            K::Obj(&[
                ("conv", CONV),
                ("before", K::Opt(&K::OneOf(&[K::Str, K::I64]))),
                ("limit", K::Opt(&K::U32)),
            ]),
            decode::<HistoryReq>,
        ),
        (
            "group.create",
            K::Obj(&[("name", K::Str), ("members", K::Opt(&MEMBERS))]),
            decode::<GroupCreateReq>,
        ),
        (
            "group.add",
            K::Obj(&[("group", K::Str), ("members", MEMBERS)]),
            decode::<GroupMembersReq>,
        ),
        (
            "group.info",
            K::Obj(&[("group", K::Str)]),
            decode::<GroupReq>,
        ),
        (
            "group.admin",
            K::Obj(&[("group", K::Str), ("userId", K::Str), ("admin", K::Bool)]),
            decode::<GroupAdminReq>,
        ),
        (
            "group.rename",
            K::Obj(&[("group", K::Str), ("name", K::Str)]),
            decode::<GroupRenameReq>,
        ),
        (
            "friend.request",
            K::Obj(&[("target", K::Str), ("remark", OPT_STR)]),
            decode::<FriendRequestReq>,
        ),
        (
            "friend.accept",
            K::Obj(&[("from", K::Str)]),
            decode::<FriendAnswerReq>,
        ),
        (
            "profile.get",
            K::Obj(&[("users", K::Opt(&MEMBERS)), ("userId", OPT_STR)]),
            decode::<ProfileGetReq>,
        ),
        (
            "profile.update",
            K::Obj(&[("displayName", OPT_STR), ("portrait", OPT_STR)]),
            decode::<ProfileUpdateReq>,
        ),
        (
            "read",
            K::Obj(&[("conv", CONV), ("upTo", K::Str)]),
            decode::<ReadReq>,
        ),
        ("typing", K::Obj(&[("conv", CONV)]), decode::<ConvReq>),
        (
            "presence",
            K::Obj(&[("users", K::Opt(&MEMBERS))]),
            decode::<PresenceReq>,
        ),
        (
            "conversations",
            K::Obj(&[("limit", K::Opt(&K::U32))]),
            decode::<ConversationsReq>,
        ),
        (
            "conversation.mute",
            K::Obj(&[("conv", CONV), ("muted", K::Bool)]),
            decode::<MuteReq>,
        ),
    ]
}

/// `send` as the broker takes it: decoded, then content validated and its
/// depth checked.
fn decode_send(v: &Value) -> Result<(), String> {
    let req: SendReq = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    req.content.validate()?;
    limits::check_depth("content", v.get("content").unwrap_or(&Value::Null))
        .map_err(|e| e.to_string())
}

/// The broker's frame decoding, step by step as in `on_text`; never panics.
fn decode_frame(text: &str) -> Result<(), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("not an object".into());
    }
    if let Some(id) = value.get("id").filter(|v| !v.is_null()) {
        id.as_u64().ok_or("bad id")?;
    }
    let op = value.get("op").and_then(Value::as_str).ok_or("no op")?;
    let requests = ws_requests();
    let (_, _, decode) = requests
        .iter()
        .find(|(name, ..)| *name == op)
        .ok_or("unknown op")?;
    decode(&value)
}

/// Removes `null` object fields, which some types write for absent options.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// A case per type: `(type index, generated value)`.
fn cases<S: 'static>(
    types: Vec<(&'static str, K, S)>,
    mutate: bool,
) -> impl Strategy<Value = (usize, Value)> {
    let all: Vec<_> = types
        .iter()
        .enumerate()
        .map(|(i, (_, k, _))| gen_value(*k, mutate).prop_map(move |v| (i, v)))
        .collect();
    prop::strategy::Union::new(all)
}

// ---- Property tests ---------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_frame_decoder(text in any::<String>()) {
        let _ = decode_frame(&text);
    }

    #[test]
    fn arbitrary_json_never_panics_any_decoder(v in arb_json(), op in "[a-z.]{0,14}") {
        let mut frame = v.clone();
        if let Value::Object(m) = &mut frame {
            m.insert("op".into(), Value::from(op));
        }
        let _ = decode_frame(&frame.to_string());
        for (_, _, decode) in ws_requests() {
            let _ = decode(&v);
        }
        for (_, _, rt) in http_bodies().into_iter().chain(ws_shared()) {
            let _ = rt(&v);
        }
        let _ = limits::check_depth("content", &v);
    }

    #[test]
    fn well_formed_requests_decode((i, v) in cases(ws_requests(), false)) {
        let (op, _, decode) = &ws_requests()[i];
        let mut frame = v.clone();
        frame["op"] = json!(op);
        frame["id"] = json!(7);
        // Content validation may refuse (an empty text, a zero width); the
        // decoding itself must succeed.
        match decode(&frame) {
            Ok(()) => {}
            Err(e) => prop_assert!(*op == "send" && !e.contains("invalid type") && !e.contains("missing field"), "{op}: {e}: {frame}"),
        }
    }

    #[test]
    fn a_send_round_trips(conv in gen_value(CONV, false), content in gen_value(CONTENT, false), cmid in "[a-z0-9-]{1,20}") {
        let frame = json!({"id": 1, "op": "send", "conv": conv, "content": content, "clientMsgId": cmid});
        let req: SendReq = serde_json::from_value(frame).unwrap();
        prop_assert_eq!(serde_json::to_value(&req.conv).unwrap(), conv);
        prop_assert_eq!(serde_json::to_value(&req.content).unwrap(), content);
        prop_assert_eq!(req.client_msg_id.as_deref(), Some(cmid.as_str()));
    }

    #[test]
    fn mutated_requests_never_panic((i, v) in cases(ws_requests(), true)) {
        let (op, _, _) = &ws_requests()[i];
        let mut frame = v;
        if let Value::Object(m) = &mut frame {
            m.insert("op".into(), json!(op));
        }
        let _ = decode_frame(&frame.to_string());
    }

    #[test]
    fn valid_bodies_round_trip((i, v) in cases(http_bodies().into_iter().chain(ws_shared()).collect(), false)) {
        let types: Vec<_> = http_bodies().into_iter().chain(ws_shared()).collect();
        let (name, _, rt) = &types[i];
        let out = rt(&v).map_err(|e| TestCaseError::fail(format!("{name}: {e}: {v}")))?;
        prop_assert_eq!(strip_nulls(&out), strip_nulls(&v), "{}", name);
    }

    #[test]
    fn mutated_bodies_never_panic((i, v) in cases(http_bodies().into_iter().chain(ws_shared()).collect(), true)) {
        let types: Vec<_> = http_bodies().into_iter().chain(ws_shared()).collect();
        let (name, _, rt) = &types[i];
        // Whatever decodes must re-encode stably (checked inside).
        if let Err(e) = rt(&v) {
            prop_assert!(!e.starts_with("re-decode") && !e.starts_with("unstable"), "{}: {}", name, e);
        }
        let _ = rt(&Value::String(v.to_string()));
    }
}

// ---- A storm of frames at a live broker -------------------------------------

/// Hostile connections, and frames each throws.
const STORM_CONNS: usize = 4;
const FRAMES_PER_CONN: usize = 25_000;
const MAX_FRAME: usize = 16 * 1024;
/// Ids at or above this are junk that may come back; below, every frame
/// with an id must be answered exactly once.
const UNTRACKED: u64 = 1 << 62;
/// Close codes a hostile client may be given (docs/PROTOCOL.md).
const DOCUMENTED_CLOSES: &[u16] = &[
    close::TOO_BIG,
    close::TOO_SLOW,
    1002, // protocol error
    1007, // invalid payload
    1008, // policy violation
];

/// How deep the storm nests `custom` content: well past
/// `limits::MAX_CONTENT_DEPTH`, so the storm proves deep content is refused
/// (stored, it would break every reader of it), yet shallow enough that the
/// whole frame, mutations included, stays inside serde_json's recursion limit
/// (128) and so keeps its `id` for the answer.
const DEEPEST_CONTENT: usize = 100;

const OPS: &[&str] = Request::OPS;

/// Generates the storm's frames from a seed (printed, so a failure replays).
struct Storm {
    rng: SmallRng,
    /// Users and groups the frames name: the hostile users themselves.
    users: Vec<String>,
}

enum Frame {
    Text(String, Option<u64>),
    Binary(Vec<u8>),
}

impl Storm {
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.rng.random_range(0..xs.len())]
    }

    fn string(&mut self) -> String {
        match self.rng.random_range(0..6) {
            0 => String::new(),
            1 => " \t\n".into(),
            2 => "\u{1b}[31mred\u{1b}[0m\nforged log line".into(),
            3 => "x".repeat(self.rng.random_range(100..4000)),
            4 => (0..self.rng.random_range(1..20))
                .map(|_| char::from_u32(self.rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
                .collect(),
            _ => format!("u{}", self.rng.random_range(0..50)),
        }
    }

    fn number(&mut self) -> Value {
        match self.rng.random_range(0..8) {
            0 => json!(-1),
            1 => json!(0),
            2 => json!(i64::MAX),
            3 => json!(u64::MAX),
            4 => json!(1e308),
            5 => json!(-1e-308),
            6 => json!(self.rng.random_range(0..1000)),
            _ => json!(i64::MIN),
        }
    }

    fn json(&mut self, depth: usize) -> Value {
        match self.rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => json!(self.rng.random_bool(0.5)),
            2 => self.number(),
            3 => json!(self.string()),
            4 => json!(self.pick(OPS)),
            5 => Value::Array(
                (0..self.rng.random_range(0..4))
                    .map(|_| self.json(depth - 1))
                    .collect(),
            ),
            _ => {
                let keys = [
                    "op", "conv", "content", "type", "target", "text", "limit", "since", "data",
                    "x",
                ];
                Value::Object(
                    (0..self.rng.random_range(0..5))
                        .map(|_| ((*self.pick(&keys)).to_owned(), self.json(depth - 1)))
                        .collect(),
                )
            }
        }
    }

    fn conv(&mut self) -> Value {
        let kind = if self.rng.random_bool(0.7) {
            "single"
        } else {
            "group"
        };
        let target = if self.rng.random_bool(0.8) {
            self.pick(&self.users.clone()).clone()
        } else {
            self.string()
        };
        json!({"type": kind, "target": target})
    }

    fn nested(&mut self, levels: usize) -> Value {
        (0..levels).fold(json!("core"), |v, _| json!({"a": v}))
    }

    fn content(&mut self) -> Value {
        match self.rng.random_range(0..6) {
            0 => json!({"type": "text", "text": self.string()}),
            1 => {
                json!({"type": "image", "url": "http://x/a.png", "w": self.number(), "h": 1, "size": 1})
            }
            2 => json!({"type": "location", "title": "t", "lat": self.number(), "lng": 0}),
            3 => {
                let levels = self.rng.random_range(1..=DEEPEST_CONTENT);
                json!({"type": "custom", "data": self.nested(levels)})
            }
            4 => json!({"type": "custom", "data": self.json(3)}),
            _ => json!({"type": self.string(), "url": "javascript:alert(1)"}),
        }
    }

    /// A well-formed request of `op` (ids added by the caller).
    fn request(&mut self, op: &str) -> Value {
        let user = self.pick(&self.users.clone()).clone();
        let members: Vec<String> = (0..self.rng.random_range(0..4))
            .map(|_| self.pick(&self.users.clone()).clone())
            .collect();
        let mut v = match op {
            "connect" => {
                json!({"token": self.string(), "clientId": self.string(), "platform": self.number()})
            }
            "send" => {
                json!({"conv": self.conv(), "content": self.content(), "clientMsgId": self.string()})
            }
            "sync" => json!({"since": self.number(), "limit": self.rng.random_range(0..10)}),
            "recv" => json!({"upTo": self.number()}),
            "history" => {
                json!({"conv": self.conv(), "before": self.json(1), "limit": self.rng.random_range(0..10)})
            }
            "group.create" => json!({"name": self.string(), "members": members}),
            "group.add" | "group.remove" => json!({"group": self.string(), "members": members}),
            "group.admin" => json!({"group": self.string(), "userId": user, "admin": true}),
            "group.rename" => json!({"group": self.string(), "name": self.string()}),
            "group.leave" | "group.dissolve" | "group.info" => json!({"group": self.string()}),
            "friend.request" => json!({"target": user, "remark": self.string()}),
            "friend.accept" | "friend.reject" => json!({"from": user}),
            "profile.get" => json!({"users": members}),
            "profile.update" => json!({"displayName": self.string(), "portrait": self.string()}),
            "read" => {
                json!({"conv": self.conv(), "upTo": format!("m{}", self.rng.random_range(0..100))})
            }
            "typing" => json!({"conv": self.conv()}),
            "presence" => json!({"users": members}),
            "conversations" => json!({"limit": self.number()}),
            "conversation.mute" => json!({"conv": self.conv(), "muted": self.rng.random_bool(0.5)}),
            _ => json!({}),
        };
        v["op"] = json!(op);
        v
    }

    /// Mutates a field anywhere in `v`: replaced, removed, or retyped.
    fn mutate(&mut self, v: &mut Value) {
        let Value::Object(m) = v else { return };
        let keys: Vec<String> = m.keys().cloned().collect();
        if keys.is_empty() {
            return;
        }
        let key = self.pick(&keys).clone();
        match self.rng.random_range(0..5) {
            0 => {
                m.remove(&key);
            }
            1 => {
                let j = self.json(3);
                m.insert(key, j);
            }
            2 => {
                let n = self.number();
                m.insert(key, n);
            }
            3 => {
                let s = self.string();
                m.insert(key, json!(s));
            }
            _ => {
                if let Some(inner) = m.get_mut(&key) {
                    self.mutate(inner);
                }
            }
        }
    }

    /// The next frame; `id` is the id to give it if it is tracked.
    fn frame(&mut self, id: u64) -> Frame {
        let junk_id = || -> Value { json!(UNTRACKED + id) };
        let text = match self.rng.random_range(0..1000) {
            // Valid ops, some with mutated fields.
            0..=449 => {
                let op = *self.pick(OPS);
                let mut v = self.request(op);
                for _ in 0..self.rng.random_range(0..3) {
                    self.mutate(&mut v);
                }
                let op = v["op"].as_str().unwrap_or_default();
                // `recv` and `typing` are never answered (docs/PROTOCOL.md).
                if matches!(op, "recv" | "typing") {
                    v["id"] = junk_id();
                    return Frame::Text(v.to_string(), None);
                }
                match self.rng.random_range(0..20) {
                    0 => v["id"] = json!(-1),
                    1 => v["id"] = json!("7"),
                    2 => v["id"] = json!(1.5),
                    3 => v["id"] = junk_id(),
                    4 => {}
                    _ => {
                        v["id"] = json!(id);
                        return Frame::Text(v.to_string(), Some(id));
                    }
                }
                v.to_string()
            }
            // Random JSON.
            450..=599 => self.json(5).to_string(),
            // Truncated valid frames.
            600..=699 => {
                let op = *self.pick(OPS);
                let mut v = self.request(op);
                v["id"] = junk_id();
                let s = v.to_string();
                let mut cut = self.rng.random_range(0..s.len());
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s[..cut].to_owned()
            }
            // Garbage text.
            700..=779 => (0..self.rng.random_range(0..200))
                .map(|_| char::from(self.rng.random_range(0..128u8)))
                .collect(),
            // Huge numbers where ids, seqs and limits go.
            780..=849 => {
                let big = *self.pick(&[
                    "18446744073709551616",
                    "-9223372036854775809",
                    "1e400",
                    "123456789012345678901234567890",
                    "-0",
                    "1E-400",
                ]);
                let op = *self.pick(&["sync", "history", "recv", "conversations", "read"]);
                format!(
                    r#"{{"op":"{op}","since":{big},"limit":{big},"upTo":{big},"id":{}}}"#,
                    junk_id()
                )
            }
            // Deep nesting, inside --max-frame.
            850..=899 => {
                let n = self.rng.random_range(1..2000);
                match self.rng.random_range(0..3) {
                    0 => format!("{}{}", "[".repeat(n), "]".repeat(n)),
                    1 => {
                        let d = n.min(DEEPEST_CONTENT);
                        format!(
                            r#"{{"op":"send","conv":{},"content":{{"type":"custom","data":{}1{}}}}}"#,
                            self.conv(),
                            "[".repeat(d),
                            "]".repeat(d)
                        )
                    }
                    _ => format!(
                        r#"{{"op":"ping","x":{}}}"#,
                        "{\"a\":".repeat(n) + "1" + &"}".repeat(n)
                    ),
                }
            }
            // Binary frames.
            900..=949 => {
                let len = self.rng.random_range(0..300);
                return Frame::Binary((0..len).map(|_| self.rng.random::<u8>()).collect());
            }
            // Big strings just inside --max-frame.
            950..=954 => {
                let conv = self.conv().to_string();
                let room = MAX_FRAME - 100 - conv.len();
                let len = self.rng.random_range(room / 2..room);
                format!(
                    r#"{{"op":"send","conv":{conv},"content":{{"type":"text","text":"{}"}}}}"#,
                    "y".repeat(len)
                )
            }
            // More pipelined pings: cheap, always answered.
            _ => return Frame::Text(format!(r#"{{"op":"ping","id":{id}}}"#), Some(id)),
        };
        Frame::Text(text, None)
    }
}

#[derive(Default, Debug)]
struct StormStats {
    frames: usize,
    tracked: usize,
    answered: usize,
    /// Tracked frames left unanswered when the server closed the connection.
    excused: usize,
    closes: HashMap<u16, usize>,
    server_errors: Vec<String>,
    problems: Vec<String>,
}

/// Throws `frames` frames at the broker over one connection (reconnecting
/// when it is closed with a documented code); pipelined, answers read
/// concurrently.
async fn hostile(
    ws_url: String,
    token: String,
    users: Vec<String>,
    seed: u64,
    frames: usize,
) -> StormStats {
    let mut storm = Storm {
        rng: SmallRng::seed_from_u64(seed),
        users,
    };
    let mut stats = StormStats::default();
    let mut next_id = 1u64;
    let mut conn_no = 0;
    while stats.frames < frames {
        conn_no += 1;
        let ws = imctl::bench::connect_ws(&ws_url, &token, &format!("storm-{seed}-{conn_no}"))
            .await
            .expect("hostile client connects");
        let (mut sink, mut stream) = ws.split();
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        // Set when the server closed: the writer stops throwing.
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed_by_server = closed.clone();
        // The reader: matches answers to tracked ids until every one sent
        // is answered (after the writer is done) or the server closes.
        let reader = tokio::spawn(async move {
            let mut pending: HashMap<u64, String> = HashMap::new();
            let mut answered = 0usize;
            let mut server_errors = Vec::new();
            let mut problems = Vec::new();
            let mut writer_done = false;
            let mut done_rx = done_rx;
            let mut seen: HashSet<u64> = HashSet::new();
            let close = loop {
                if writer_done && pending.is_empty() {
                    break None;
                }
                tokio::select! {
                    Some((id, op)) = sent_rx.recv() => { pending.insert(id, op); }
                    _ = &mut done_rx, if !writer_done => {
                        writer_done = true;
                        // Everything sent is in the channel by now.
                        while let Ok((id, op)) = sent_rx.try_recv() {
                            pending.insert(id, op);
                        }
                    }
                    frame = tokio::time::timeout(Duration::from_secs(20), stream.next()) => {
                        let frame = match frame {
                            Err(_) => {
                                problems.push(format!("no answer within 20 s; {} pending, e.g. {:?}", pending.len(), pending.iter().take(3).collect::<Vec<_>>()));
                                break None;
                            }
                            Ok(f) => f,
                        };
                        match frame {
                            Some(Ok(Message::Text(t))) => {
                                let v: Value = match serde_json::from_str(t.as_str()) {
                                    Ok(v) => v,
                                    Err(e) => { problems.push(format!("server sent invalid JSON: {e}")); continue }
                                };
                                if v["op"] == "error" && v["code"].as_i64() == Some(500) {
                                    server_errors.push(v.to_string());
                                }
                                let Some(id) = v["id"].as_u64().filter(|&id| id < UNTRACKED) else { continue };
                                // The writer registers an id before sending it,
                                // so it is in the channel if not yet in `pending`.
                                while let Ok((i, op)) = sent_rx.try_recv() {
                                    pending.insert(i, op);
                                }
                                if pending.remove(&id).is_some() {
                                    answered += 1;
                                    seen.insert(id);
                                } else if seen.contains(&id) {
                                    problems.push(format!("a second answer to id {id}: {v}"));
                                } else {
                                    problems.push(format!("an answer to id {id} that was never sent: {v}"));
                                }
                            }
                            Some(Ok(Message::Close(f))) => break Some(f.map(|f| u16::from(f.code))),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => { problems.push(format!("read failed: {e}")); break Some(None) }
                            None => break Some(None),
                        }
                    }
                }
            };
            closed_by_server.store(true, std::sync::atomic::Ordering::Relaxed);
            (close, pending, answered, server_errors, problems, stream)
        });
        let mut writer_failed = false;
        let mut in_batch = 0;
        while stats.frames < frames && !closed.load(std::sync::atomic::Ordering::Relaxed) {
            let frame = storm.frame(next_id);
            let message = match frame {
                Frame::Text(text, tracked) => {
                    if let Some(id) = tracked {
                        let op = serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|v| v["op"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let _ = sent_tx.send((id, op));
                        stats.tracked += 1;
                        next_id += 1;
                    }
                    Message::text(text)
                }
                Frame::Binary(b) => Message::binary(b),
            };
            stats.frames += 1;
            if sink.feed(message).await.is_err() {
                writer_failed = true;
                break;
            }
            in_batch += 1;
            if in_batch == 32 {
                in_batch = 0;
                if sink.flush().await.is_err() {
                    writer_failed = true;
                    break;
                }
            }
        }
        if !writer_failed {
            let _ = sink.flush().await;
        }
        let _ = done_tx.send(());
        let (close, pending, answered, server_errors, problems, mut stream) = reader.await.unwrap();
        stats.answered += answered;
        stats.server_errors.extend(server_errors);
        stats.problems.extend(problems);
        match close {
            // Everything answered: end with a frame over --max-frame, which
            // must close the connection with 1009.
            None => match over_max_frame(&mut sink, &mut stream).await {
                Ok(code) => *stats.closes.entry(code).or_default() += 1,
                Err(e) => stats.problems.push(e),
            },
            Some(Some(code)) if DOCUMENTED_CLOSES.contains(&code) => {
                *stats.closes.entry(code).or_default() += 1;
                stats.excused += pending.len();
            }
            Some(code) => {
                stats.problems.push(format!(
                    "connection closed with {code:?} (not a documented close code) with {} answers pending",
                    pending.len()
                ));
            }
        }
    }
    stats
}

/// Sends one frame over --max-frame; the close code the server answers.
async fn over_max_frame(
    sink: &mut (impl futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin),
    stream: &mut (
             impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
             + Unpin
         ),
) -> Result<u16, String> {
    let big = format!(r#"{{"op":"ping","pad":"{}"}}"#, "z".repeat(MAX_FRAME + 1));
    sink.send(Message::text(big))
        .await
        .map_err(|e| e.to_string())?;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = stream.next().await {
            if let Ok(Message::Close(f)) = m {
                return f.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await;
    match closed {
        Ok(Some(code)) if code == close::TOO_BIG => Ok(code),
        other => Err(format!(
            "a frame over --max-frame: {other:?}, not a 1009 close within 10 s"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_hostile_frames_breaks_nothing() {
    let max_frame = MAX_FRAME.to_string();
    let s = common::start(&["--max-frame", &max_frame, "--admin-secret", "storm-secret"]).await;
    // The hostile users, and a well-behaved pair on the side.
    let mut hostile_users = Vec::new();
    for i in 0..STORM_CONNS {
        let (_, r) = s.login(&format!("1370000{i:04}")).await;
        hostile_users.push((
            r["userId"].as_str().unwrap().to_owned(),
            r["token"].as_str().unwrap().to_owned(),
        ));
    }
    let (mut alice, _) = s.chat("13900000001", "side-a").await;
    let (mut bob, bob_connected) = s.chat("13900000002", "side-b").await;
    let bob_id = bob_connected.user_id.clone();
    // Under the storm a send's ack can take seconds (printed as "slowest"):
    // this checks that nothing is lost, not how fast it goes.
    alice.set_timeout(Duration::from_secs(60));
    bob.set_timeout(Duration::from_secs(60));
    let ids: Vec<String> = hostile_users.iter().map(|(u, _)| u.clone()).collect();
    let seed: u64 = std::env::var("IMCTL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14);
    let started = std::time::Instant::now();
    let storms: Vec<_> = hostile_users
        .iter()
        .enumerate()
        .map(|(i, (_, token))| {
            tokio::spawn(hostile(
                s.ws_url(),
                token.clone(),
                ids.clone(),
                seed + i as u64,
                FRAMES_PER_CONN,
            ))
        })
        .collect();

    // Meanwhile: send → ack → received, one at a time, seqs gapless.
    let mut acked = Vec::new();
    let mut last_seq = bob_connected.head;
    let mut slowest = Duration::ZERO;
    while !storms.iter().all(|t| t.is_finished()) && acked.len() < 2000 {
        let n = acked.len();
        let t = std::time::Instant::now();
        let ack = alice
            .send_text(
                "single",
                &bob_id,
                &format!("side {n}"),
                Some(&format!("side-{n}")),
            )
            .await
            .unwrap_or_else(|e| panic!("side send {n} during the storm: {e}"));
        let push = bob
            .next_op("msg")
            .await
            .unwrap_or_else(|e| panic!("side message {n} not received: {e}"));
        assert_eq!(push["message"]["msgId"], json!(ack.msg_id), "{push}");
        assert_eq!(
            push["seq"].as_i64(),
            Some(last_seq + 1),
            "gap in bob's seqs: {push}"
        );
        last_seq += 1;
        slowest = slowest.max(t.elapsed());
        acked.push(ack.msg_id);
    }
    let mut total = StormStats::default();
    for t in storms {
        let st = t.await.expect("a hostile client task");
        total.frames += st.frames;
        total.tracked += st.tracked;
        total.answered += st.answered;
        total.excused += st.excused;
        for (k, v) in st.closes {
            *total.closes.entry(k).or_default() += v;
        }
        total.server_errors.extend(st.server_errors);
        total.problems.extend(st.problems);
    }
    eprintln!(
        "storm (seed {seed}): {} frames over {STORM_CONNS} connections in {:.1} s; {} with ids: {} answered, {} unanswered when closed; closes {:?}; side pair: {} messages sent, acked and received in order (slowest {slowest:?})",
        total.frames,
        started.elapsed().as_secs_f64(),
        total.tracked,
        total.answered,
        total.excused,
        total.closes,
        acked.len()
    );
    assert!(total.frames >= 100_000, "{total:?}");
    assert!(
        total.problems.is_empty(),
        "{} problems, e.g. {:#?}",
        total.problems.len(),
        &total.problems[..total.problems.len().min(8)]
    );
    assert!(
        total.server_errors.is_empty(),
        "code 500 answers: {:#?}",
        &total.server_errors[..total.server_errors.len().min(5)]
    );
    assert_eq!(total.answered + total.excused, total.tracked);
    assert!(
        total.closes.get(&close::TOO_BIG) >= Some(&STORM_CONNS),
        "{total:?}"
    );
    assert!(!acked.is_empty());

    // Bob's inbox by `sync`: every acked message exactly once, seqs gapless.
    let mut since = 0;
    let mut seqs = Vec::new();
    let mut got = Vec::new();
    loop {
        let page = bob
            .request(json!({"op": "sync", "since": since, "limit": 1000}))
            .await
            .unwrap();
        for e in page["entries"].as_array().unwrap() {
            seqs.push(e["seq"].as_i64().unwrap());
            if e["message"]["from"] != json!(bob_id) {
                got.push(e["message"]["msgId"].as_str().unwrap().to_owned());
            }
        }
        since = seqs.last().copied().unwrap_or(since);
        let more = page["more"].as_bool().unwrap_or(false);
        if !more || page["entries"].as_array().unwrap().is_empty() {
            break;
        }
    }
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "bob's seqs have gaps"
    );
    for m in &acked {
        assert_eq!(
            got.iter().filter(|g| *g == m).count(),
            1,
            "{m} not exactly once in bob's sync"
        );
    }

    // The app-server still answers everything without a 5xx.
    for path in [
        "/healthz",
        "/readyz",
        "/config",
        "/metrics",
        "/_dev/status",
        "/_dev/users",
        "/_dev/sms",
        "/_dev/pc_sessions",
    ] {
        let r = s.get(path).await;
        assert!(r.status().as_u16() < 500, "{path}: {}", r.status());
    }
    for path in ["/admin/users", "/admin/connections", "/admin/export"] {
        let r = s
            .http
            .get(format!("{}{path}", s.url))
            .header("X-Admin-Secret", "storm-secret")
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "{path}: {}", r.status());
    }
    s.login("13900000003").await;
}
