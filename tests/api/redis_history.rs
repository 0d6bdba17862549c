//! History and recovery through a real `redis-server`: a recovery on
//! another process, after every chatd restarted, after Redis lost the
//! streams, across an outage, after a SIGKILL, and under a live race.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libc::SIGKILL;
use serde_json::Value;

use crate::helpers::{messages, offsets, since_of, TestApp, WsClient, WAIT};
use crate::redis::{events_for, wait_for_redis};
use crate::redis_helpers::RedisServer;
use crate::redis_rooms::spawn_chatty_app;
use crate::server_process::ServerProcess;

/// Says `text` in general and waits for its echo: the message is stored.
async fn say_stored(client: &mut WsClient, text: &str) -> Value {
    client.say(text).await;
    loop {
        let echo = client.next_event_of("echo").await;
        if echo["message"] == text {
            return echo;
        }
    }
}

/// Both apps connected to Redis.
async fn connected(apps: &[&TestApp]) {
    for app in apps {
        wait_for_redis(&app.url("/status"), "connected", |r| {
            r["state"] == "connected"
        })
        .await;
    }
}

#[actix_web::test]
async fn a_client_recovers_on_another_process_what_was_said_on_the_first() {
    let Some(redis) = RedisServer::start_or_skip("recover_elsewhere") else {
        return;
    };
    let (one, two) = (
        spawn_chatty_app(&redis.url()).await,
        spawn_chatty_app(&redis.url()).await,
    );
    connected(&[&one, &two]).await;
    let (mut ana, _) = one.connect_ws("ana").await;
    let (bo, welcome) = one.connect_ws("bo").await;
    let mut seen = welcome["rooms"][0].clone();
    seen["offset"] = say_stored(&mut ana, "seen by bo").await["offset"].clone();
    bo.leave().await;

    for text in ["missed 1", "missed 2"] {
        say_stored(&mut ana, text).await;
    }
    let (mut bo, welcome) = two
        .connect_ws_with(&format!("?name=bo&since={}", since_of(&seen)))
        .await;

    let joined = &welcome["rooms"][0];
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(messages(&joined["history"]), ["missed 1", "missed 2"]);
    assert_eq!(offsets(&joined["history"]), [2, 3]);
    say_stored(&mut ana, "live after").await;
    let live = bo.next_event_of("echo").await;
    assert_eq!(
        (live["message"].as_str(), live["offset"].as_u64()),
        (Some("live after"), Some(4))
    );
}

#[actix_web::test]
async fn the_history_outlives_every_chatd_and_not_a_flushed_redis() {
    let Some(redis) = RedisServer::start_or_skip("history_outlives") else {
        return;
    };
    let epoch = {
        let app = spawn_chatty_app(&redis.url()).await;
        connected(&[&app]).await;
        let (mut ana, welcome) = app.connect_ws("ana").await;
        for text in ["first", "second"] {
            say_stored(&mut ana, text).await;
        }
        welcome["rooms"][0]["epoch"].as_str().unwrap().to_string()
    };

    // Every chatd of before is gone; a new one serves the same history.
    let again = spawn_chatty_app(&redis.url()).await;
    connected(&[&again]).await;
    let (_, welcome) = again
        .connect_ws_with(&format!("?since=general:1:{epoch}"))
        .await;
    let joined = &welcome["rooms"][0];
    assert_eq!(
        (joined["epoch"].as_str(), joined["recovered"].as_bool()),
        (Some(epoch.as_str()), Some(true))
    );
    assert_eq!(messages(&joined["history"]), ["second"]);

    let () = redis.query(&redis::cmd("FLUSHALL")).await;
    let (_, welcome) = again
        .connect_ws_with(&format!("?since=general:2:{epoch}"))
        .await;
    let joined = &welcome["rooms"][0];
    assert_ne!(
        joined["epoch"].as_str(),
        Some(epoch.as_str()),
        "a lost history is a new epoch"
    );
    assert_eq!(
        (joined["recovered"].as_bool(), joined["offset"].as_u64()),
        (Some(false), Some(0))
    );
}

#[actix_web::test]
async fn what_is_said_during_an_outage_is_stored_when_redis_returns() {
    let Some(mut redis) = RedisServer::start_or_skip("outage_history") else {
        return;
    };
    let (one, two) = (
        spawn_chatty_app(&redis.url()).await,
        spawn_chatty_app(&redis.url()).await,
    );
    connected(&[&one, &two]).await;
    let (mut ana, welcome) = one.connect_ws("ana").await;
    let mut seen = welcome["rooms"][0].clone();
    seen["offset"] = say_stored(&mut ana, "before").await["offset"].clone();

    redis.kill();
    wait_for_redis(&one.url("/status"), "noticed the outage", |r| {
        r["state"] == "connecting"
    })
    .await;
    let during = say_stored(&mut ana, "during the outage").await;
    assert!(
        during.get("offset").is_none(),
        "unstored while Redis is away: {during}"
    );
    let (status, _) = one.get_json("/rooms/general/history").await;
    assert_eq!(status, 503, "no history without Redis");
    redis.restart();
    connected(&[&one, &two]).await;

    // A client that recovers later, on the other process, gets it stored.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, welcome) = two
            .connect_ws_with(&format!("?since={}", since_of(&seen)))
            .await;
        let history = &welcome["rooms"][0]["history"];
        if history.as_array().is_some_and(|h| !h.is_empty()) {
            assert_eq!(messages(history), ["during the outage"]);
            assert_eq!(
                history[0]["id"], during["id"],
                "the same message, now with an offset"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never stored: {welcome}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn a_message_whose_echo_was_seen_survives_a_sigkill_of_its_process() {
    let Some(redis) = RedisServer::start_or_skip("sigkill_history") else {
        return;
    };
    let env = [
        ("REDIS_URL", redis.url()),
        ("RATE_LIMIT_BURST", "1000".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut doomed = ServerProcess::start(&env);
    let survivor = ServerProcess::start(&env);
    for process in [&doomed, &survivor] {
        wait_for_redis(&process.url("/status"), "connected", |r| {
            r["state"] == "connected"
        })
        .await;
    }
    let (mut ana, welcome) = doomed.connect_ws("ana").await;
    let epoch = welcome["rooms"][0]["epoch"].as_str().unwrap().to_string();
    let mut said = Vec::new();
    for n in 0..20 {
        said.push(say_stored(&mut ana, &format!("m{n}")).await["id"].clone());
    }

    doomed.signal(SIGKILL);
    doomed.wait_for_exit(WAIT);

    let (_, welcome) = survivor
        .connect_ws_with(&format!("?since=general:0:{epoch}"))
        .await;
    let history = &welcome["rooms"][0]["history"];
    let ids: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(
        ids,
        said.iter().collect::<Vec<_>>(),
        "every echoed message is stored"
    );
    doomed.kill();
}

#[actix_web::test]
async fn clients_that_recover_while_others_talk_see_no_gap_and_no_repeat() {
    let Some(redis) = RedisServer::start_or_skip("recovery_race") else {
        return;
    };
    let (one, two) = (
        spawn_chatty_app(&redis.url()).await,
        spawn_chatty_app(&redis.url()).await,
    );
    connected(&[&one, &two]).await;
    let (mut talker, _) = one.connect_ws("talker").await;
    let talking = tokio::spawn(async move {
        for n in 0..600 {
            talker.say(&format!("t{n}")).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        talker
    });

    // Each resumer hops between the processes, resuming where it left off.
    let mut resumers = Vec::new();
    for r in 0..4 {
        let apps = [one.ws_url(""), two.ws_url("")];
        resumers.push(tokio::spawn(async move {
            let mut seen: Vec<u64> = Vec::new();
            let mut since: Option<String> = None;
            for hop in 0..8 {
                let url = &apps[(hop + r) % 2];
                let query = since
                    .as_ref()
                    .map_or("?name=r".to_string(), |s| format!("?name=r&since={s}"));
                let mut client = WsClient::connect(&format!("{url}{query}")).await;
                let welcome = client.next_event().await;
                let joined = &welcome["rooms"][0];
                if since.is_some() {
                    assert_eq!(joined["recovered"], true, "hop {hop}: {joined}");
                }
                seen.extend(offsets(&joined["history"]));
                if std::env::var_os("DEBUG_RACE").is_some() {
                    eprintln!(
                        "r{r} hop {hop} url {url} since {since:?} recovered {} top {} history {:?}",
                        joined["recovered"],
                        joined["offset"],
                        offsets(&joined["history"])
                    );
                }
                let epoch = joined["epoch"].as_str().unwrap().to_string();
                let stay = Instant::now() + Duration::from_millis(60);
                while let Ok(event) =
                    tokio::time::timeout_at(stay.into(), client.next_event()).await
                {
                    if let Some(offset) = event["offset"].as_u64() {
                        if std::env::var_os("DEBUG_RACE").is_some() {
                            eprintln!("r{r} hop {hop} live {offset}");
                        }
                        seen.push(offset);
                    }
                }
                let last = seen
                    .last()
                    .copied()
                    .unwrap_or(joined["offset"].as_u64().unwrap());
                since = Some(format!("general:{last}:{epoch}"));
                client.leave().await;
            }
            seen
        }));
    }
    let _talker = talking.await.unwrap();

    for resumer in resumers {
        let seen = resumer.await.unwrap();
        assert!(!seen.is_empty());
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a repeat: {seen:?}");
        let (first, last) = (seen[0], *seen.last().unwrap());
        assert_eq!(
            seen,
            (first..=last).collect::<Vec<_>>(),
            "a gap or a step back"
        );
    }
}

#[actix_web::test]
async fn a_client_that_talks_before_its_welcome_gets_the_welcome_first_then_its_answers() {
    let Some(redis) = RedisServer::start_or_skip("welcome_first") else {
        return;
    };
    let app = spawn_chatty_app(&redis.url()).await;
    connected(&[&app]).await;

    for round in 0..20 {
        let mut client = WsClient::connect(&app.ws_url("?name=eager&room=general")).await;
        client.send_text("not json").await;
        client.say("first words").await;
        client.send_text(r#"{"type":"join","room":"ops"}"#).await;
        let in_ops = format!("in ops {round}");
        client.say_in("ops", &in_ops).await;

        let welcome = client.next_event().await;
        assert_eq!(welcome["type"], "welcome", "round {round}: always first");
        let error = client.next_event().await;
        assert_eq!(error["code"], "bad_frame", "round {round}: {error}");
        // Across rooms there is no order: the echo in general and the
        // joined of ops come in either.
        let (a, b) = (client.next_event().await, client.next_event().await);
        let (echo, joined) = if a["type"] == "echo" { (a, b) } else { (b, a) };
        assert_eq!(echo["message"], "first words", "round {round}: {echo}");
        assert_eq!(
            (joined["type"].as_str(), joined["room"].as_str()),
            (Some("joined"), Some("ops")),
            "round {round}"
        );
        // "in ops" was stored before ops's history was read or after: it
        // comes once, in the history or live.
        let later = events_for(&mut client, Duration::from_millis(300)).await;
        let in_history = messages(&joined["history"])
            .iter()
            .filter(|m| **m == in_ops)
            .count();
        let live = later.iter().filter(|e| e["message"] == *in_ops).count();
        assert_eq!(in_history + live, 1, "round {round}: {joined} {later:?}");
        client.leave().await;
    }
}
