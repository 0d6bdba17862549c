//! The composer on a phone: it grows with its text and shows no scrollbar
//! (no arrows) until it reaches its maximum height.

use crate::helpers::{Page, TestChat, ENTER, RELEASE, SHIFT};

/// What the composer looks like from the layout's point of view.
#[derive(Debug, serde::Deserialize)]
struct Composer {
    /// Pixels the scrollbar takes beside the text (0 without one).
    gutter: f64,
    overflow_y: String,
    /// The text is taller than the box (it would need scrolling).
    overflows: bool,
    height: f64,
}

async fn composer(page: &Page) -> Composer {
    let value = page
        .eval(
            "const t = document.getElementById('text'); const s = getComputedStyle(t); \
             return { gutter: t.offsetWidth - t.clientWidth - parseFloat(s.borderLeftWidth) \
                        - parseFloat(s.borderRightWidth), \
                      overflow_y: s.overflowY, overflows: t.scrollHeight > t.clientHeight, \
                      height: t.getBoundingClientRect().height };",
        )
        .await;
    serde_json::from_value(value).expect("the composer as JSON")
}

#[actix_web::test]
async fn the_composer_on_a_phone_grows_without_scrollbar_arrows_until_its_max_height() {
    let Some(mut chat) = TestChat::start() else {
        return;
    };
    // On a phone the room list comes first; the link opens the chat.
    let page = chat
        .open_chat_showing_scrollbars("/#general", (390, 700))
        .await;
    page.wait_for_open_room("general").await;

    page.type_into_composer("one line").await;
    let one = composer(&page).await;
    page.type_into_composer(&format!("{SHIFT}{ENTER}{RELEASE}two lines"))
        .await;
    let two = composer(&page).await;
    picture(&page, "composer-phone.png").await;

    for (what, state) in [("one line", &one), ("two lines", &two)] {
        assert_eq!(
            state.gutter, 0.0,
            "{what}: no scrollbar beside the text: {state:?}"
        );
        assert_eq!(state.overflow_y, "hidden", "{what}: {state:?}");
        assert!(!state.overflows, "{what}: the box fits its text: {state:?}");
    }
    assert!(two.height > one.height, "it grew: {one:?} {two:?}");

    let many_lines = format!("{SHIFT}{ENTER}{RELEASE}more").repeat(12);
    page.type_into_composer(&many_lines).await;
    let tall = composer(&page).await;
    assert_eq!(
        tall.overflow_y, "auto",
        "past its max height it scrolls: {tall:?}"
    );
    assert!(tall.overflows, "{tall:?}");
    picture(&page, "composer-phone-tall.png").await;
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
