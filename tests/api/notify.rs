use crate::helpers::spawn_app;

#[actix_web::test]
async fn notify_reaches_every_client_and_reports_how_many() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let (mut bo, _) = app.connect_ws("bo").await;

    let (status, body) = app.post_notify("deploy at noon").await;

    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"status": "success", "message": "Notification sent to 2 clients"})
    );
    for client in [&mut ana, &mut bo] {
        let event = client.next_event().await;
        assert_eq!(event["type"], "notification");
        assert_eq!(event["message"], "deploy at noon");
    }
}

#[actix_web::test]
async fn notify_with_no_clients_reports_zero() {
    let app = spawn_app().await;

    let (status, body) = app.post_notify("anyone?").await;

    assert_eq!(status, 200);
    assert_eq!(body["message"], "Notification sent to 0 clients");
}

#[actix_web::test]
async fn notify_accepts_a_json_body() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;

    let mut response = app
        .http
        .post(app.url("/notify"))
        .send_json(&serde_json::json!({"message": "from json"}))
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Notification sent to 1 clients");
    assert_eq!(ana.next_event().await["message"], "from json");
}

#[actix_web::test]
async fn notify_without_a_message_is_rejected_with_400() {
    let app = spawn_app().await;
    let (mut ana, _) = app.connect_ws("ana").await;
    let cases = [
        ("no message at all", "", ""),
        ("empty query message", "?message=", ""),
        ("blank query message", "?message=%20%20", ""),
        ("empty JSON message", "", r#"{"message":""}"#),
        ("JSON without message", "", r#"{"text":"hi"}"#),
        ("bad JSON", "", "{not json"),
    ];
    for (what, query, body) in cases {
        let mut response = app
            .http
            .post(app.url(&format!("/notify{query}")))
            .insert_header(("content-type", "application/json"))
            .send_body(body.to_string())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{what}");
        let body: serde_json::Value = response.json().await.expect(what);
        assert_eq!(body["status"], "error", "{what}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    ana.expect_silence().await;
}
