use crate::helpers::{TestChat, ENTER, RELEASE, SHIFT};

#[actix_web::test]
async fn two_pages_chat_both_ways_with_own_bubbles_right_and_others_left() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    let bob = chat.open_chat_as("Bob").await;

    ana.say("Hi Bob!").await;
    bob.wait_for_bubble("Hi Bob!").await;
    bob.say("Hello Ana").await;
    ana.wait_for_bubble("Hello Ana").await;

    for (page, own_text, other_text, other_name) in [
        (&ana, "Hi Bob!", "Hello Ana", "Bob"),
        (&bob, "Hello Ana", "Hi Bob!", "Ana"),
    ] {
        let own = page.wait_for_bubble(own_text).await;
        let other = page.wait_for_bubble(other_text).await;
        let middle = (own.log_left + own.log_right) / 2.0;
        assert!(own.own && !other.own, "{own:?} {other:?}");
        assert_eq!(own.who, "", "own bubbles carry no name");
        assert_eq!(other.who, other_name);
        assert!(
            own.left > middle && own.right > own.log_right - 60.0,
            "own bubble sits on the right: {own:?}"
        );
        assert!(
            other.right < middle && other.left < other.log_left + 80.0,
            "other bubble sits on the left: {other:?}"
        );
    }
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn enter_sends_shift_enter_breaks_the_line_and_a_sender_s_run_is_one_group() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat_as("Ana").await;
    let bob = chat.open_chat().await;

    ana.type_into_composer(&format!("line one{SHIFT}{ENTER}{RELEASE}line two{ENTER}"))
        .await;
    ana.say("and a second message").await;

    bob.wait_for_bubble("line one\nline two").await;
    bob.wait_for_bubble("and a second message").await;
    let groups = bob
        .eval(
            "return [...openLog().querySelectorAll('.group')].map((g) => \
             [g.querySelectorAll('.who').length, g.querySelectorAll('.bubble').length]);",
        )
        .await;
    assert_eq!(
        groups,
        serde_json::json!([[1, 2]]),
        "one name over two bubbles"
    );
    let composer = ana
        .eval("return document.getElementById('text').value;")
        .await;
    assert_eq!(composer, "", "the composer is emptied after sending");
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn a_notification_shows_as_a_centred_pill_on_both_pages() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat().await;
    let bob = chat.open_chat().await;

    let status = chat.post_notify("Deploy at 17:00").await;

    assert_eq!(status, 200);
    for page in [&ana, &bob] {
        page.wait_for_pill("Deploy at 17:00").await;
        let offset = page
            .eval(
                "const pill = [...openLog().querySelectorAll('.pill')].pop().getBoundingClientRect(); \
                 const log = openLog().getBoundingClientRect(); \
                 return Math.abs((pill.left + pill.right) / 2 - (log.left + log.right) / 2);",
            )
            .await;
        assert!(
            offset.as_f64().is_some_and(|px| px < 2.0),
            "the pill is centred, off by {offset}px"
        );
    }
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn a_message_that_looks_like_html_shows_as_literal_text() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat().await;
    let bob = chat.open_chat().await;
    let attack = "<img src=x onerror=alert(1)>";

    ana.say(attack).await;

    for page in [&ana, &bob] {
        let bubble = page.wait_for_bubble(attack).await;
        assert_eq!(bubble.text, attack);
        let images = page
            .eval("return document.querySelectorAll('#logs img').length;")
            .await;
        assert_eq!(images, 0, "no element was made from the message");
    }
    ana.close().await;
    bob.close().await;
}

#[actix_web::test]
async fn a_name_with_forbidden_characters_is_cleaned_before_connecting() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let page = chat.open_chat().await;

    page.set_name_raw("<b>Zoë</b>!").await;

    page.wait_for_pill("You are now bZoëb").await;
    page.wait_for_state("connected").await;
    let stored = page
        .eval("return localStorage.getItem('chatd.name');")
        .await;
    assert_eq!(stored, "bZoëb", "the cleaned name is remembered");

    page.reload().await;

    page.wait_for_pill("You joined as bZoëb").await;
    page.close().await;
}

#[actix_web::test]
async fn a_reader_who_scrolled_up_gets_a_new_messages_chip_instead_of_a_jump() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    let ana = chat.open_chat().await;
    let bob = chat.open_chat().await;
    for n in 1..=15 {
        ana.say(&format!("filler {n}")).await;
    }
    bob.wait_for_bubble("filler 15").await;
    bob.wait_until(
        "(() => { const l = openLog(); \
         return l.scrollHeight - l.scrollTop - l.clientHeight < 2; })()",
        "the view to follow the latest message",
    )
    .await;

    bob.eval("openLog().scrollTop = 0; return true;").await;
    ana.say("while you were reading").await;

    bob.wait_for_bubble("while you were reading").await;
    bob.wait_until(
        "!document.getElementById('new-messages').hidden \
         && document.getElementById('new-count').textContent === '1'",
        "the chip to count one new message",
    )
    .await;
    let top = bob.eval("return openLog().scrollTop;").await;
    assert_eq!(top, 0, "the view stayed where the reader was");
    bob.find_and_click("#new-messages").await;
    bob.wait_until(
        "document.getElementById('new-messages').hidden",
        "the chip to go away at the bottom",
    )
    .await;
    ana.close().await;
    bob.close().await;
}
