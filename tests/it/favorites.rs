//! Favorites, group announcements, the version check and name avatars,
//! over real sockets.

use serde_json::{Value, json};

use crate::common::start;

/// A favorite the way vue-chat sends it: numbers, and nulls for what a
/// text message lacks.
fn fav(title: &str) -> Value {
    json!({"messageUid": 1234567890123i64, "type": 1, "convType": 0, "convTarget": "bob",
        "convLine": 0, "origin": "Bob Chen", "sender": "bob", "title": title,
        "url": null, "thumbUrl": null, "data": null})
}

#[tokio::test]
async fn favorites_are_listed_newest_first_with_every_field() {
    let s = start(&[]).await;
    let (auth, _) = s.login("13800000001").await;
    let mut ids = vec![];
    for t in ["one", "two", "three"] {
        let r = s.post("/fav/add", fav(t), Some(&auth)).await;
        assert_eq!(r.code(), 0, "{}", r.body);
        ids.push(r.body["result"]["id"].as_i64().unwrap());
    }
    // Android-style: numbers as strings.
    let r = s
        .post("/fav/add", json!({"messageUid": "77", "type": "3", "convType": "1", "convTarget": "g1", "convLine": "0", "url": "http://x/y.png"}), Some(&auth))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);

    let r = s
        .post("/fav/list", json!({"id": 0, "count": 2}), Some(&auth))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let page = &r.body["result"];
    assert_eq!(page["hasMore"], true);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[0]["type"].as_i64(), items[0]["messageUid"].as_i64()),
        (Some(3), Some(77))
    );
    assert_eq!(items[1]["title"], "three");
    for key in [
        "convTarget",
        "origin",
        "sender",
        "title",
        "url",
        "thumbUrl",
        "data",
        "userId",
    ] {
        assert!(
            items[1][key].is_string(),
            "{key} present as a string: {}",
            items[1]
        );
    }
    for key in [
        "id",
        "messageUid",
        "type",
        "convType",
        "convLine",
        "timestamp",
    ] {
        assert!(items[1][key].is_i64(), "{key}: {}", items[1]);
    }
    assert_eq!(items[1]["userId"], "alice");
    let r = s
        .post(
            "/fav/list",
            json!({"id": items[1]["id"], "count": "10"}),
            Some(&auth),
        )
        .await;
    let rest = &r.body["result"];
    assert_eq!(rest["hasMore"], false);
    let titles: Vec<&Value> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["title"])
        .collect();
    assert_eq!(titles, [&json!("two"), &json!("one")]);

    // Only one's own, by id in the path, no body.
    let (bob, _) = s.login("13800000002").await;
    let del = |id: String, auth: String| {
        let http = s.http.clone();
        let url = format!("{}/fav/del/{id}", s.url);
        async move {
            let resp = http
                .post(url)
                .header("authToken", auth)
                .send()
                .await
                .unwrap();
            resp.json::<Value>().await.unwrap()["code"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(del(ids[0].to_string(), bob.clone()).await, 16);
    assert_eq!(del(ids[0].to_string(), auth.clone()).await, 0);
    assert_eq!(del(ids[0].to_string(), auth.clone()).await, 16);
    assert_eq!(del("abc".into(), auth.clone()).await, 15);
    assert_eq!(del("1".into(), "nope".into()).await, 13);
    let r = s
        .post("/fav/list", json!({"id": 0, "count": 0}), Some(&bob))
        .await;
    assert_eq!(r.body["result"], json!({"items": [], "hasMore": false}));
}

#[tokio::test]
async fn bad_favorites_are_code_15() {
    let s = start(&[]).await;
    let (auth, _) = s.login("13800000001").await;
    let mut no_type = fav("x");
    no_type.as_object_mut().unwrap().remove("type");
    let mut long_title = fav("x");
    long_title["title"] = json!("t".repeat(300));
    let mut big_data = fav("x");
    big_data["data"] = json!("d".repeat(20 * 1024));
    let mut bad_url = fav("x");
    bad_url["url"] = json!("not a url");
    for body in [
        no_type,
        long_title,
        big_data,
        bad_url,
        json!({"type": "text"}),
        json!([1]),
    ] {
        let r = s.post("/fav/add", body.clone(), Some(&auth)).await;
        assert_eq!(r.code(), 15, "{body}: {}", r.body);
    }
    assert_eq!(
        s.post("/fav/list", json!({"id": "x"}), Some(&auth))
            .await
            .code(),
        15
    );
    assert_eq!(s.post("/fav/add", fav("x"), None).await.code(), 13);
    assert_eq!(s.post("/fav/list", json!({}), None).await.code(), 13);
}

#[tokio::test]
async fn a_group_announcement_is_kept_and_posted_to_the_group() {
    let s = start(&[]).await;
    let group = s.group("13800000001", "team", &["bob"]).await;
    let (mut alice, _) = s.chat("13800000001", "alice-ann").await;
    let (bob, _) = s.login("13800000002").await;
    let (carol, _) = s.login("13800000003").await;

    let get = json!({"groupId": group});
    let r = s
        .post("/get_group_announcement", get.clone(), Some(&bob))
        .await;
    assert_eq!(r.code(), 12, "{}", r.body);

    let put = json!({"groupId": group, "author": "alice", "text": "Standup at 10\nin room 2"});
    let r = s
        .post("/put_group_announcement", put.clone(), Some(&bob))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let res = r.body["result"].clone();
    assert_eq!(
        (res["groupId"].as_str(), res["author"].as_str()),
        (Some(group.as_str()), Some("bob"))
    );
    assert_eq!(res["text"], "Standup at 10\nin room 2");
    assert!(res["timestamp"].as_i64().unwrap() > 0);

    let push = alice.next_push().await.unwrap();
    assert_eq!(push["message"]["from"], "bob", "{push}");
    assert_eq!(
        push["message"]["content"]["text"],
        "Standup at 10\nin room 2"
    );

    let r = s
        .post("/get_group_announcement", get.clone(), Some(&bob))
        .await;
    assert_eq!((r.code(), &r.body["result"]), (0, &res));

    assert_eq!(
        s.post("/get_group_announcement", get.clone(), Some(&carol))
            .await
            .code(),
        14
    );
    assert_eq!(
        s.post("/put_group_announcement", put.clone(), Some(&carol))
            .await
            .code(),
        14
    );
    let unknown = json!({"groupId": "no-such-group", "text": "x"});
    assert_eq!(
        s.post("/put_group_announcement", unknown.clone(), Some(&bob))
            .await
            .code(),
        16
    );
    assert_eq!(
        s.post("/get_group_announcement", unknown, Some(&bob))
            .await
            .code(),
        16
    );
    for text in [
        json!(""),
        json!("x".repeat(2001)),
        json!("a\u{7}b"),
        json!(5),
    ] {
        let r = s
            .post(
                "/put_group_announcement",
                json!({"groupId": group, "text": text}),
                Some(&bob),
            )
            .await;
        assert_eq!(r.code(), 15, "{text}: {}", r.body);
    }
    // Muted: refused, and the old announcement stays.
    let muted = s
        .http
        .post(format!("{}/admin/groups/{group}/mute", s.url))
        .header("X-Admin-Secret", &s.running.state.admin_secret)
        .send()
        .await
        .unwrap();
    assert!(muted.status().is_success());
    let other = json!({"groupId": group, "text": "cancelled"});
    let r = s.post("/put_group_announcement", other, Some(&bob)).await;
    assert_eq!(r.code(), 14, "{}", r.body);
    let r = s
        .post("/get_group_announcement", get.clone(), Some(&bob))
        .await;
    assert_eq!(r.body["result"]["text"], "Standup at 10\nin room 2");
    assert_eq!(
        s.post("/get_group_announcement", json!({}), Some(&bob))
            .await
            .code(),
        15
    );
    assert_eq!(
        s.post("/get_group_announcement", get, None).await.code(),
        13
    );
}

#[tokio::test]
async fn version_check_never_offers_an_update() {
    let s = start(&[]).await;
    let v: Value = s
        .get("/version/check?platform=2&currentVersion=1.2.3&buildNumber=45")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], 0);
    let r = &v["result"];
    assert_eq!(
        (r["needUpdate"].as_bool(), r["forceUpdate"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        (r["latestVersion"].as_str(), r["buildNumber"].as_str()),
        (Some("1.2.3"), Some("45"))
    );
    let bare: Value = s.get("/version/check").await.json().await.unwrap();
    assert_eq!(bare["result"]["latestVersion"], "");
    let long: Value = s
        .get(&format!(
            "/version/check?currentVersion={}",
            "9".repeat(100)
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(long["code"], 15);
}

#[tokio::test]
async fn avatars_for_names_are_svg_with_only_the_initial() {
    let s = start(&[]).await;
    let resp = s.get("/avatar?name=%E5%BC%A0%E4%B8%89").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    let svg = resp.text().await.unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains(">张</text>"),
        "{svg}"
    );
    let hostile = s
        .get("/avatar?name=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !hostile.contains("script") && hostile.contains(">?</text>"),
        "{hostile}"
    );
    let bob = s.get("/avatar?name=bob").await.text().await.unwrap();
    assert!(bob.contains(">B</text>"));
    assert_eq!(s.get("/avatar").await.status(), 200);
}
