use crate::helpers::spawn_app;

#[actix_web::test]
async fn status_counts_connections_as_clients_come_and_go() {
    let app = spawn_app().await;
    let (_, before) = app.get_json("/status").await;
    assert_eq!(before["status"], "ok");
    assert_eq!(before["connections"], 0);
    assert_eq!(before["pid"], std::process::id());
    assert_eq!(before["redis"]["state"], "disabled");

    let (ana, _) = app.connect_ws("ana").await;
    let (bo, _) = app.connect_ws("bo").await;
    app.wait_for_connections(2).await;
    ana.leave().await;
    app.wait_for_connections(1).await;
    bo.leave().await;
    app.wait_for_connections(0).await;
}

#[actix_web::test]
async fn health_and_readiness_answer_ok_while_serving() {
    let app = spawn_app().await;

    let (health, health_body) = app.get_json("/healthz").await;
    let (ready, ready_body) = app.get_json("/readyz").await;

    assert_eq!((health, ready), (200, 200));
    assert_eq!(health_body["status"], "ok");
    assert_eq!(ready_body["status"], "ready");
}

#[actix_web::test]
async fn the_chat_page_and_its_assets_are_served() {
    let app = spawn_app().await;

    let mut page = app.get("/").await;
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    let mut script = app.get("/static/app.js").await;
    let css = app.get("/static/style.css").await;

    assert_eq!(page.status().as_u16(), 200);
    assert!(html.contains("/static/app.js"), "the page loads its script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    assert_eq!(script.status().as_u16(), 200);
    assert!(!script.body().await.unwrap().is_empty());
    assert_eq!(css.status().as_u16(), 200);
}

#[actix_web::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let app = spawn_app().await;

    let (missing, body) = app.get_json("/nope").await;
    let mut wrong = app.get("/notify").await;

    assert_eq!(missing, 404);
    assert_eq!(body["status"], "error");
    assert_eq!(wrong.status().as_u16(), 405);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["status"], "error");
}
