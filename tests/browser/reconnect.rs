use std::time::Duration;

use crate::helpers::{TestChat, WAIT};

#[actix_web::test]
async fn the_page_reconnects_by_itself_after_the_server_restarts() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let page = chat.open_chat_as("Ana").await;
    page.say("before the restart").await;
    page.wait_for_bubble("before the restart").await;

    chat.server.kill();

    page.wait_until(
        "document.getElementById('state').dataset.state !== 'connected'",
        "the page to notice the lost connection",
    )
    .await;
    let composer_disabled = page
        .eval("return document.getElementById('text').disabled;")
        .await;
    assert_eq!(composer_disabled, true, "no typing into a dead connection");

    chat.restart_server();

    page.wait_for_pill("Reconnected as Ana").await;
    page.wait_for_state("connected").await;
    page.say("after the restart").await;
    let bubble = page.wait_for_bubble("after the restart").await;
    assert!(bubble.own, "the new server knows the page as its sender");
    page.close().await;
}

#[actix_web::test]
async fn after_a_shutdown_notice_the_page_leaves_and_comes_back_by_itself() {
    // The drain would wait a minute for the page; the page leaves by itself
    // after its retry_after_ms (at most 10 s), which ends the drain.
    let Some(mut chat) = TestChat::start_with(&[("SHUTDOWN_TIMEOUT", "60")]) else {
        return;
    };
    let page = chat.open_chat_as("Ana").await;

    chat.server.signal(libc::SIGTERM);

    page.wait_for_pill("reconnecting in").await;
    let code = chat.server.wait_for_exit(WAIT + Duration::from_secs(10));
    assert_eq!(code, 0, "the drain ends because the page left");
    chat.restart_server();
    page.wait_for_pill("Reconnected as Ana").await;
    page.wait_for_state("connected").await;
    page.close().await;
}
