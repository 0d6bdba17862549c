//! Origin checks on the upgrade, and the headers that keep the chat page
//! from running anything but its own script.

use crate::bad_input::a_fresh_client_round_trips;
use crate::helpers::spawn_app_with;
use crate::raw_ws::Upgrade;
use chatd::config::AllowedOrigins;

#[actix_web::test]
async fn upgrades_are_checked_against_the_allowed_origins() {
    let listed = AllowedOrigins::List(vec!["https://chat.example".into()]);
    // The host part is filled in with the server's own address.
    let cases = [
        (
            "same host by default",
            AllowedOrigins::SameHost,
            Some("http://{host}"),
            101,
        ),
        ("no Origin by default", AllowedOrigins::SameHost, None, 101),
        (
            "a foreign origin by default",
            AllowedOrigins::SameHost,
            Some("https://evil.example"),
            403,
        ),
        (
            "the same host on another port",
            AllowedOrigins::SameHost,
            Some("http://127.0.0.1:1"),
            403,
        ),
        (
            "the null origin",
            AllowedOrigins::SameHost,
            Some("null"),
            403,
        ),
        (
            "any origin with *",
            AllowedOrigins::Any,
            Some("https://evil.example"),
            101,
        ),
        (
            "a listed origin",
            listed.clone(),
            Some("https://chat.example"),
            101,
        ),
        (
            "a listed origin, other case",
            listed.clone(),
            Some("HTTPS://Chat.Example"),
            101,
        ),
        (
            "an unlisted origin",
            listed.clone(),
            Some("https://evil.example"),
            403,
        ),
        (
            "the own host when not listed",
            listed.clone(),
            Some("http://{host}"),
            403,
        ),
        ("no Origin with a list", listed, None, 101),
    ];
    for (what, policy, origin, expected) in cases {
        let app = spawn_app_with(|c| c.allowed_origins = policy).await;
        let mut upgrade = Upgrade::new("?name=visitor");
        if let Some(origin) = origin {
            let origin = origin.replace("{host}", &app.address.to_string());
            upgrade = upgrade.header("Origin", &origin);
        }

        let answer = upgrade.send(app.address).await;

        assert_eq!(answer.status, expected, "{what}: {}", answer.body);
        if expected == 403 {
            let body = answer.json();
            assert_eq!(body["status"], "error", "{what}");
            assert_eq!(body["message"], "origin not allowed", "{what}");
        } else {
            let mut socket = answer.accepted();
            assert_eq!(socket.next_event().await["type"], "welcome", "{what}");
        }
        a_fresh_client_round_trips(&app, what).await;
    }
}

#[actix_web::test]
async fn the_page_forbids_inline_script_and_sniffing() {
    let app = spawn_app_with(|_| {}).await;

    let page = app.get("/").await;
    let mut script = app.get("/static/app.js").await;

    let header = |name: &str| {
        page.headers()
            .get(name)
            .unwrap_or_else(|| panic!("the page has {name}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("object-src 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    // nosniff makes browsers insist on a script MIME type.
    let script_type = script
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        script_type.starts_with("text/javascript")
            || script_type.starts_with("application/javascript"),
        "{script_type}"
    );
    assert_eq!(
        script.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
    // Messages are shown with textContent; nothing parses them as HTML.
    let code = String::from_utf8(script.body().await.unwrap().to_vec()).unwrap();
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!code.contains(sink), "app.js uses {sink}");
    }
    assert!(code.contains("textContent"));
}
