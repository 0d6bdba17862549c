//! History on the chat page: what was said before a page opened, what was
//! said while it was away (resumed with `since`, once and in order), the
//! divider when the server could not resume, older messages on scroll up
//! with a bounded window, and repeated notices collapsed into one pill.

use crate::helpers::{Page, TestChat, WAIT};

const MISSING: &str = "[some messages may be missing]";

/// What a page shows, one entry per message; pills (welcome, notices) left out.
fn messages(rows: &[String]) -> Vec<&str> {
    rows.iter()
        .filter(|r| !r.starts_with('['))
        .map(String::as_str)
        .collect()
}

#[actix_web::test]
async fn a_page_opened_after_messages_were_said_shows_them_in_order() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    for text in ["first", "second", "third"] {
        ana.say(text).await;
        ana.wait_for_bubble(text).await;
    }
    assert_eq!(chat.post_notify_in("general", "a room notice").await, 200);
    ana.wait_for_pill("a room notice").await;

    let bob = chat.open_chat_as("Bob").await;

    bob.wait_for_bubble("third").await;
    let rows = bob.rows().await;
    assert_eq!(messages(&rows), ["first", "second", "third"], "{rows:?}");
    let notice = rows.iter().position(|r| r == "[a room notice]");
    let third = rows.iter().position(|r| r == "third");
    assert!(notice > third, "the notice comes after the chat: {rows:?}");
    let bubble = bob.wait_for_bubble("first").await;
    assert!(!bubble.own && bubble.who == "Ana", "{bubble:?}");
    assert!(!rows.contains(&MISSING.to_string()), "nothing is missing");
    let general = bob.room("general").await;
    assert_eq!(general.unread, 0, "the past is not unread: {general:?}");

    // Ana's own messages are still hers after a reload.
    ana.reload().await;
    ana.wait_for_pill("You joined as Ana").await;
    let own = ana.wait_for_bubble("second").await;
    assert!(own.own, "{own:?}");
    assert_eq!(messages(&ana.rows().await), ["first", "second", "third"]);
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn messages_said_while_a_page_was_away_appear_once_in_order_after_it_resumes() {
    // Two chatd processes on one Redis, as in a rolling deploy: Ana's page
    // on the first, Bob's on the second. The drain of the first waits a
    // minute for Ana's page, which leaves by itself after retry_after_ms.
    let Some(mut chat) = TestChat::start_with_redis(&[("SHUTDOWN_TIMEOUT", "60")]) else {
        return;
    };
    let mut second = chat.start_another_server();
    let first = chat.server.address;
    let ana = chat.open_chat_as("Ana").await;
    let bob = chat.open_chat_on(&second, "Bob").await;
    chat.wait_until_relaying(&chat.server, 1).await;
    chat.wait_until_relaying(&second, 1).await;
    ana.say("before").await;
    bob.wait_for_bubble("before").await;

    // Bob's server dies; Ana goes on talking.
    second.kill();
    bob.wait_until(
        "document.getElementById('state').dataset.state !== 'connected'",
        "Bob's page to notice the lost connection",
    )
    .await;
    for text in ["away 1", "away 2", "away 3"] {
        ana.say(text).await;
        ana.wait_for_bubble(text).await;
    }
    let second = chat.restart_on_same_port(&second);

    bob.wait_for_pill("Reconnected as Bob").await;
    bob.wait_for_bubble("away 3").await;
    bob.say("back").await;
    ana.wait_for_bubble("back").await;
    let rows = bob.rows().await;
    assert_eq!(
        messages(&rows),
        ["before", "away 1", "away 2", "away 3", "back"],
        "once each, in order: {rows:?}"
    );
    assert!(!rows.contains(&MISSING.to_string()), "{rows:?}");

    // Ana's server drains: her page leaves after its shutdown_notice and
    // comes back once a server takes it again; Bob talks meanwhile.
    chat.server.signal(libc::SIGTERM);
    ana.wait_for_pill("reconnecting in").await;
    let code = chat
        .server
        .wait_for_exit(WAIT + std::time::Duration::from_secs(10));
    assert_eq!(code, 0, "the drain ends because the page left");
    for text in ["while Ana was away", "and more"] {
        bob.say(text).await;
        bob.wait_for_bubble(text).await;
    }
    chat.server = chat.restart_on_same_port(&chat.server);
    assert_eq!(chat.server.address, first);

    ana.wait_for_pill("Reconnected as Ana").await;
    ana.wait_for_bubble("and more").await;
    let rows = ana.rows().await;
    assert_eq!(
        messages(&rows),
        [
            "before",
            "away 1",
            "away 2",
            "away 3",
            "back",
            "while Ana was away",
            "and more"
        ],
        "once each, in order: {rows:?}"
    );
    assert!(!rows.contains(&MISSING.to_string()), "{rows:?}");
    drop(second);
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn after_a_restart_that_lost_the_history_the_page_says_messages_may_be_missing() {
    // Without Redis the history lives in the process: a new one has a new
    // epoch, and the page's resume is answered with recovered:false.
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
    chat.restart_server();

    page.wait_for_pill("some messages may be missing").await;
    page.wait_for_state("connected").await;
    page.say("after the restart").await;
    page.wait_for_bubble("after the restart").await;
    let rows = page.rows().await;
    let divider = rows.iter().position(|r| r == MISSING);
    let before = rows.iter().position(|r| r == "before the restart");
    let after = rows.iter().position(|r| r == "after the restart");
    assert!(
        before < divider && divider < after,
        "the divider sits between: {rows:?}"
    );
    assert_eq!(page.rows_anywhere_containing("before the restart").await, 1);
    picture(&page, "history-divider.png").await;
    page.close().await;
}

#[actix_web::test]
async fn repeated_periodic_notices_collapse_into_one_pill_that_counts_them() {
    let Some(mut chat) = TestChat::start_with(&[("PERIODIC_NOTIFICATION", "1")]) else {
        return;
    };
    let page = chat.open_chat_as("Ana").await;

    page.wait_until(
        "[...openLog().querySelectorAll('.pill')].some((p) => Number(p.dataset.count) >= 3)",
        "a periodic notice counted three times",
    )
    .await;

    assert_eq!(
        page.rows_anywhere_containing("Periodic notification").await,
        1,
        "one pill for all of them:\n{}",
        page.transcript().await
    );
    let pill = page
        .eval(
            "return [...openLog().querySelectorAll('.pill')] \
             .find((p) => p.dataset.count).textContent;",
        )
        .await;
    let pill = pill.as_str().expect("the pill's text");
    assert!(
        pill.starts_with("Periodic notification #") && pill.contains("×") && pill.contains("last"),
        "it shows the latest, how many and when: {pill}"
    );
    page.say("in between").await;
    page.wait_for_bubble("in between").await;
    page.wait_until(
        "openLog().lastElementChild.classList.contains('pill') \
         && openLog().lastElementChild.textContent.includes('Periodic notification')",
        "the next notice to move the pill below the message",
    )
    .await;
    assert_eq!(
        page.rows_anywhere_containing("Periodic notification").await,
        1
    );
    picture(&page, "history-repeated-notice.png").await;
    page.close().await;
}

#[actix_web::test]
async fn scrolling_to_the_top_loads_older_messages_and_the_window_stays_bounded() {
    let Some(mut chat) = TestChat::start_with(&[
        ("HISTORY_SIZE", "1000"),
        ("RATE_LIMIT_PER_SEC", "10000"),
        ("RATE_LIMIT_BURST", "10000"),
    ]) else {
        return;
    };
    let mut bot = chat.bot("Bot").await;
    let said: Vec<String> = (1..=640).map(|n| format!("m {n}")).collect();
    bot.say_all(&said[..340]).await;

    let page = chat.open_chat_as("Ana").await;
    page.wait_for_bubble("m 340").await;
    let shown = messages(&page.rows().await).len();
    assert_eq!(shown, 50, "a join brings the latest HISTORY_ON_JOIN (50)");
    assert_eq!(messages(&page.rows().await)[0], "m 291");

    // While the page follows the latest, it keeps 300 rows at most.
    bot.say_all(&said[340..]).await;
    page.wait_for_bubble("m 640").await;
    let rows = page.rows().await;
    assert!(rows.len() <= 300, "{} rows", rows.len());
    assert_eq!(messages(&rows).last(), Some(&"m 640"));
    assert!(
        !rows.contains(&"m 300".to_string()),
        "older rows left the page"
    );

    // Scrolling up brings older ones back, 50 at a time, in order.
    let deadline = std::time::Instant::now() + WAIT;
    while !page.rows().await.contains(&"m 1".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "m 1 never came back; the page shows:\n{:?}",
            page.rows().await
        );
        page.scroll_to_top().await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let rows = page.rows().await;
    assert_eq!(messages(&rows), said, "every message once, in order");
    let top = page.eval("return openLog().scrollTop;").await;
    assert!(
        top.as_f64().is_some_and(|px| px > 0.0),
        "the view stays where the reader was, not at the new top: {top}"
    );

    // Back at the bottom, the window shrinks again.
    page.scroll_to_bottom().await;
    page.wait_until(
        "openLog().querySelectorAll('.bubble, .pill').length <= 300",
        "the window to shrink back to 300 rows",
    )
    .await;
    assert_eq!(messages(&page.rows().await).last(), Some(&"m 640"));
    page.close().await;
}

/// Keeps a picture of the page in the test's scratch directory, to look at
/// when the layout is in doubt.
async fn picture(page: &Page, file: &str) {
    let png = page.screenshot().await;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    std::fs::write(&path, png).expect("the screenshot is written");
    eprintln!("wrote {}", path.display());
}
