//! Uploads: POST /media and GET /media/{id}.

use serde_json::Value;

use crate::common::{start, start_with};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png but bytes are bytes";

#[tokio::test]
async fn upload_raw_and_multipart_then_download() {
    let s = start(&[]).await;
    let (auth, login) = s.login("13800000001").await;
    let r = s
        .http
        .post(format!("{}/media", s.url))
        .header("authToken", &auth)
        .header("content-type", "image/png")
        .body(PNG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["size"].as_u64(), v["contentType"].as_str()),
        (Some(PNG.len() as u64), Some("image/png"))
    );
    let url = v["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/media/", s.url)));
    let got = s.http.get(url).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert_eq!(got.content_length(), Some(PNG.len() as u64));
    assert_eq!(got.bytes().await.unwrap().as_ref(), PNG);

    // Multipart, authenticated with the IM token instead.
    let boundary = "imctl-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\"\r\nContent-Type: application/pdf\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(b"%PDF-1.4 tiny");
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = s
        .http
        .post(format!("{}/media", s.url))
        .bearer_auth(login["token"].as_str().unwrap())
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["contentType"], "application/pdf");
    let id = v["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the client's file name never becomes ours: {id}"
    );
    let got = s.http.get(v["url"].as_str().unwrap()).send().await.unwrap();
    assert!(
        got.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
}

#[tokio::test]
async fn bad_uploads_are_refused_with_clear_errors() {
    let s = start(&["--max-upload", "1024"]).await;
    let (auth, _) = s.login("13800000001").await;
    let post = |ct: &str, body: Vec<u8>, auth: Option<&str>| {
        let mut req = s
            .http
            .post(format!("{}/media", s.url))
            .header("content-type", ct)
            .body(body);
        if let Some(a) = auth {
            req = req.header("authToken", a);
        }
        req.send()
    };
    let r = post("image/png", PNG.to_vec(), None).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post("image/png", PNG.to_vec(), Some("forged"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("image/png", vec![0; 4096], Some(&auth)).await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("--max-upload")
    );
    let r = post("image/png", vec![], Some(&auth)).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(
        "text/html",
        b"<script>alert(1)</script>".to_vec(),
        Some(&auth),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 415);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("image/png")
    );
    for path in [
        "/media/0123abcd",
        "/media/..%2F..%2Fetc%2Fpasswd",
        "/media/imctl.db",
    ] {
        assert_eq!(s.get(path).await.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn uploads_live_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = imctl::config::ServeConfig::ephemeral_on_free_ports(&[]);
    config.ephemeral = false;
    config.data_dir = Some(dir.path().to_path_buf());
    let s = start_with(config).await;
    let (auth, _) = s.login("13800000001").await;
    let v: Value = s
        .http
        .post(format!("{}/media", s.url))
        .header("authToken", &auth)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["url"].as_str().unwrap().rsplit('/').next().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("media").join(id)).unwrap(),
        "hello"
    );
}
