//! A short conversation, photographed. `just screenshot` sets SCREENSHOT_DIR
//! to keep the pictures for the README; otherwise they are only checked.

use std::path::Path;

use crate::helpers::{In, Page, Scheme, TestChat};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[actix_web::test]
async fn screenshot_of_a_short_conversation_in_light_dark_and_on_a_phone() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_with(Scheme::Light, (900, 700)).await;
    let bob = chat.open_chat_with(Scheme::Dark, (900, 700)).await;
    ana.come_back_as("Ana").await;
    bob.come_back_as("Bob").await;
    let chloe = chat.open_chat_with(Scheme::Light, (390, 760)).await;
    chloe.come_back_as("Chloe").await;

    // Two more rooms, and something unread in ops for Ana and Chloe.
    ana.join_room("ops").await;
    ana.join_room("release-1.4").await;
    bob.join_room("ops").await;
    chloe.join_room("ops").await;
    chloe.find_and_click("#back").await;
    chloe.click_room("general").await;
    let ci = "CI is green on main, tagging 1.4";
    bob.say(ci).await;
    ana.wait_for_bubble_in(In::Room("ops"), ci).await;
    chloe.wait_for_bubble_in(In::Room("ops"), ci).await;
    ana.click_room("general").await;
    bob.click_room("general").await;

    bob.say("Morning! Is the deploy still on for today?").await;
    ana.wait_for_bubble("Morning! Is the deploy still on for today?")
        .await;
    ana.say("Yes, at 17:00.").await;
    ana.say("chatd drains gracefully, so nobody gets cut off mid-sentence.")
        .await;
    bob.wait_for_bubble("chatd drains gracefully, so nobody gets cut off mid-sentence.")
        .await;
    let chloe_says = "Nice. I'll keep this tab open and watch it reconnect <3";
    chloe.say(chloe_says).await;
    ana.wait_for_bubble(chloe_says).await;
    assert_eq!(chat.post_notify("Deploy starts in 10 minutes").await, 200);
    bob.say("Shipping it").await;
    ana.wait_for_bubble("Shipping it").await;
    bob.wait_for_bubble("Shipping it").await;
    chloe.wait_for_bubble("Shipping it").await;
    assert_eq!(chat.post_notify_in("ops", "Release 1.4 is live").await, 200);
    ana.wait_for_pill_in(In::Room("ops"), "Release 1.4 is live")
        .await;
    chloe
        .wait_for_pill_in(In::Room("ops"), "Release 1.4 is live")
        .await;
    assert_eq!(ana.room("ops").await.unread, 2);

    keep(&ana, "screenshot.png").await;
    keep(&bob, "screenshot-dark.png").await;
    keep(&chloe, "screenshot-phone.png").await;
    chloe.find_and_click("#back").await;
    chloe
        .wait_until(
            "getComputedStyle(document.querySelector('.side')).display !== 'none'",
            "the room list",
        )
        .await;
    keep(&chloe, "screenshot-phone-rooms.png").await;
    ana.close().await;
    bob.close().await;
    chloe.close().await;
}

/// Checks the page's picture is a PNG and saves it under SCREENSHOT_DIR.
async fn keep(page: &Page, file: &str) {
    // Let the arrival animation settle and the caret leave the picture.
    page.eval("document.activeElement.blur(); return true;")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let png = page.screenshot().await;
    assert!(png.starts_with(PNG_SIGNATURE), "a PNG image");
    if let Some(dir) = std::env::var_os("SCREENSHOT_DIR") {
        let path = Path::new(&dir).join(file);
        std::fs::write(&path, png).expect("the screenshot is written");
        eprintln!("wrote {}", path.display());
    }
}
