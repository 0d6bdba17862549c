//! Signed identity over real sockets: tokens checked before the upgrade,
//! `from.id` and `welcome.user` from `sub`, room grants, refresh, expiry,
//! typing, presence, and notices to one user.

use std::time::{Duration, Instant};

use chatd::config::AuthSetting;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Ending, TestApp, WsClient, WAIT};

pub const SECRET: &str = "test-secret-0123456789";
const ES256_PUBLIC: &[u8] = include_bytes!("../fixtures/es256-public.pem");
const ES256_PRIVATE: &[u8] = include_bytes!("../fixtures/es256-private.pem");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token for `claims`, signed with `secret`.
pub fn hs256(claims: Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

/// A good HS256 token for `sub`, valid for a minute.
pub fn token_for(sub: &str, name: &str) -> String {
    hs256(
        json!({"sub": sub, "name": name, "exp": now() + 60}),
        SECRET.as_bytes(),
    )
}

pub async fn spawn_token_app() -> TestApp {
    spawn_app_with(|c| c.auth = Some(AuthSetting::Secret(SECRET.into()))).await
}

async fn connect_with_token(app: &TestApp, token: &str, rooms: &str) -> (WsClient, Value) {
    let mut client = WsClient::connect(&app.ws_url(&format!("?token={token}{rooms}"))).await;
    let welcome = client.next_event().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

#[actix_web::test]
async fn a_valid_token_names_the_user_and_its_messages() {
    let app = spawn_token_app().await;

    let (mut ana, welcome) = connect_with_token(&app, &token_for("u-ana", "Ana"), "").await;
    let (mut ana_too, _) = connect_with_token(&app, &token_for("u-ana", "Ana"), "").await;

    assert_eq!(welcome["user"], json!({"id": "u-ana", "name": "Ana"}));
    assert_eq!(welcome["name"], "Ana");
    ana.say("hi").await;
    let echo = ana_too.next_event_of("echo").await;
    assert_eq!(echo["from"], json!({"id": "u-ana", "name": "Ana"}));
    let _ = ana.next_event_of("echo").await;
}

#[actix_web::test]
async fn bad_tokens_are_refused_with_401_before_the_upgrade_and_say_why() {
    let app = spawn_token_app().await;
    let unsigned = {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"u","exp":{}}}"#, now() + 60))
        )
    };
    let cases = [
        ("no token", String::new(), "a token is required"),
        ("garbage", "abc.def".to_string(), "not a well-formed JWT"),
        (
            "expired",
            hs256(json!({"sub": "u", "exp": now() - 60}), SECRET.as_bytes()),
            "expired",
        ),
        (
            "not yet valid",
            hs256(
                json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}),
                SECRET.as_bytes(),
            ),
            "not valid yet",
        ),
        (
            "wrong key",
            hs256(json!({"sub": "u", "exp": now() + 60}), b"another-secret"),
            "signature",
        ),
        ("alg none", unsigned, "algorithm"),
        (
            "missing sub",
            hs256(json!({"exp": now() + 60}), SECRET.as_bytes()),
            "\"sub\"",
        ),
    ];
    for (what, token, says) in cases {
        let mut response = app
            .http
            .get(
                app.ws_url(&format!("?token={token}"))
                    .replace("ws://", "http://"),
            )
            .insert_header(("Upgrade", "websocket"))
            .insert_header(("Connection", "Upgrade"))
            .insert_header(("Sec-WebSocket-Version", "13"))
            .insert_header(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{what}");
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
        if !token.is_empty() {
            assert!(!message.contains(&token), "{what}: the token is echoed");
        }
    }
}

#[actix_web::test]
async fn an_es256_key_accepts_its_tokens_and_refuses_hs256_signed_with_it() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/es256-public.pem"
    );
    let app = spawn_app_with(|c| {
        c.auth = Some(AuthSetting::PublicKey {
            path: path.into(),
            pem: ES256_PUBLIC.to_vec(),
        })
    })
    .await;
    let claims = json!({"sub": "u-es", "exp": now() + 60});
    let good = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(ES256_PRIVATE).unwrap(),
    )
    .unwrap();
    // Algorithm confusion: an HS256 token whose secret is the public key.
    let confused = hs256(claims, ES256_PUBLIC);

    let (_, welcome) = connect_with_token(&app, &good, "").await;
    assert_eq!(welcome["user"]["id"], "u-es");
    let (status, body) = app.get_json(&format!("/ws?token={confused}")).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("algorithm"),
        "{body}"
    );
}

#[actix_web::test]
async fn the_rooms_claim_limits_joins() {
    let app = spawn_token_app().await;
    let token = hs256(
        json!({"sub": "u", "exp": now() + 60, "rooms": ["ops"]}),
        SECRET.as_bytes(),
    );

    let (status, body) = app.get_json(&format!("/ws?token={token}")).await;
    assert_eq!(status, 403, "general is not in its rooms: {body}");
    let (mut client, _) = connect_with_token(&app, &token, "&room=ops").await;
    client.send_text(r#"{"type":"join","room":"dev"}"#).await;
    let error = client.next_event().await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("not_allowed")),
        "{error}"
    );
    client.say_in("ops", "still here").await;
    assert_eq!(client.next_event_of("echo").await["message"], "still here");
}

#[actix_web::test]
async fn a_token_near_its_end_warns_then_closes_with_4001_unless_refreshed() {
    let app = spawn_token_app().await;
    let short =
        |sub: &str, secs: u64| hs256(json!({"sub": sub, "exp": now() + secs}), SECRET.as_bytes());
    let (mut ending, _) = connect_with_token(&app, &short("u", 3), "").await;
    let (mut refreshed, _) = connect_with_token(&app, &short("r", 3), "").await;

    let warning = ending.next_event_of("token_expiring").await;
    assert!(warning["seconds_left"].as_u64().unwrap() <= 3, "{warning}");
    let frame = json!({"type": "refresh", "token": short("someone-else", 60)});
    refreshed.send_text(&frame.to_string()).await;
    let refusal = refreshed.next_event_of("error").await;
    assert_eq!(refusal["code"], "not_allowed", "{refusal}");
    let frame = json!({"type": "refresh", "token": short("r", 60)});
    refreshed.send_text(&frame.to_string()).await;

    assert_eq!(ending.ending().await, Ending::Closed(4001));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        refreshed.say("still on").await;
        assert_eq!(refreshed.next_event_of("echo").await["message"], "still on");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The next event that is not a `presence` one (those come every second).
async fn next_but_presence(client: &mut WsClient) -> Value {
    loop {
        let event = client.next_event().await;
        if event["type"] != "presence" {
            return event;
        }
    }
}

#[actix_web::test]
async fn typing_reaches_the_others_at_most_every_two_seconds() {
    let app = spawn_token_app().await;
    let (mut ana, _) = connect_with_token(&app, &token_for("u-ana", "Ana"), "").await;
    let (mut bo, _) = connect_with_token(&app, &token_for("u-bo", "Bo"), "").await;

    for _ in 0..3 {
        ana.send_text(r#"{"type":"typing","room":"general"}"#).await;
    }
    let typing = bo.next_event_of("typing").await;
    assert_eq!(typing["from"], json!({"id": "u-ana", "name": "Ana"}));
    assert_eq!(typing["room"], "general");
    ana.say("sent").await;
    let next = next_but_presence(&mut bo).await;
    assert_eq!(
        next["message"], "sent",
        "the repeats within 2 s were dropped: {next}"
    );
    let own = next_but_presence(&mut ana).await;
    assert_eq!(own["type"], "echo", "no typing of its own: {own}");
    let (status, page) = app.get_json("/rooms/general/history").await;
    assert_eq!(status, 200);
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "echo"),
        "typing is never stored"
    );
}

#[actix_web::test]
async fn presence_counts_a_user_once_and_tells_members_who_came_and_went() {
    let app = spawn_token_app().await;
    let (mut ana, _) = connect_with_token(&app, &token_for("u-ana", "Ana"), "").await;
    let (bo, _) = connect_with_token(&app, &token_for("u-bo", "Bo"), "").await;
    let (bo_again, _) = connect_with_token(&app, &token_for("u-bo", "Bo"), "").await;

    let deadline = Instant::now() + WAIT;
    loop {
        let event = ana.next_event_of("presence").await;
        if event["joins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == "u-bo")
        {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let (_, presence) = app.get_json("/rooms/general/presence").await;
    assert_eq!(
        presence["users"],
        json!([
            {"id": "u-ana", "name": "Ana", "connections": 1},
            {"id": "u-bo", "name": "Bo", "connections": 2},
        ])
    );
    bo.leave().await;
    bo_again.leave().await;
    let gone = ana.next_event_of("presence").await;
    assert_eq!(
        gone["leaves"],
        json!([{"id": "u-bo", "name": "Bo"}]),
        "{gone}"
    );
}
