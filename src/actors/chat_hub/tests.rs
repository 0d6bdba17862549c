//! The hub's unit tests: probes stand in for sessions and the bridge.

use super::*;

fn history() -> HistorySettings {
    crate::Config::default_for_tests().history
}
use tokio::sync::mpsc;

/// Stands in for a session: forwards every event it is delivered, one
/// JSON text at a time, to a channel.
struct Probe(mpsc::UnboundedSender<String>);

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        match msg {
            Deliver::Frames(frames) => {
                for event in frame::text_payloads(&frames) {
                    let _ = self.0.send(event);
                }
            }
            Deliver::FrameLists(lists) => {
                for event in lists.iter().flat_map(|f| frame::text_payloads(f)) {
                    let _ = self.0.send(event);
                }
            }
            Deliver::Close(code, _) => {
                let _ = self.0.send(format!("close {}", u16::from(code)));
            }
        }
    }
}

fn probe() -> (Recipient<Deliver>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Probe(tx).start().recipient(), rx)
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<String>) -> serde_json::Value {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(event)) => serde_json::from_str(&event).expect(&event),
        other => panic!("expected an event, got {other:?}"),
    }
}

fn connect(hub: &Addr<ChatHub>, name: &str) -> mpsc::UnboundedReceiver<String> {
    let (session, rx) = probe();
    hub.do_send(Connect {
        id: SessionId::next(),
        name: DisplayName::parse(name, 32).unwrap(),
        user: None,
        session,
        deflate: None,
        rooms: vec![(RoomName::general(), None)],
    });
    rx
}

#[actix_rt::test]
async fn a_say_reaches_every_member_with_the_same_bytes() {
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let (ana_session, mut ana) = probe();
    let ana_id = SessionId::next();
    hub.do_send(Connect {
        id: ana_id,
        name: DisplayName::parse("ana", 32).unwrap(),
        user: None,
        session: ana_session,
        deflate: None,
        rooms: vec![(RoomName::general(), None)],
    });
    let mut bo = connect(&hub, "bo");
    assert_eq!(next_event(&mut ana).await["type"], "welcome");
    assert_eq!(next_event(&mut bo).await["online"], 2);

    hub.do_send(Say {
        from: ana_id,
        room: RoomName::general(),
        text: "hi".into(),
    });

    let (a, b) = (next_event(&mut ana).await, next_event(&mut bo).await);
    assert_eq!(a, b);
    assert_eq!(a["type"], "echo");
    assert_eq!(a["from"]["name"], "ana");
}

#[actix_rt::test]
async fn a_session_that_joins_after_the_drain_finished_is_closed_with_1001() {
    struct Ignore;
    impl Actor for Ignore {
        type Context = Context<Self>;
    }
    impl Handler<HubEmpty> for Ignore {
        type Result = ();
        fn handle(&mut self, _: HubEmpty, _: &mut Self::Context) {}
    }
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let told = hub
        .send(Drain {
            deadline: Instant::now() + Duration::from_secs(30),
            on_empty: Ignore.start().recipient(),
        })
        .await
        .unwrap();
    assert_eq!(told, 0, "empty at once, so the coordinator is already told");

    let mut late = connect(&hub, "late");

    assert_eq!(next_event(&mut late).await["type"], "welcome");
    assert_eq!(next_event(&mut late).await["type"], "shutdown_notice");
    let close = tokio::time::timeout(Duration::from_secs(5), late.recv()).await;
    assert_eq!(close.unwrap().as_deref(), Some("close 1001"));
    assert_eq!(hub.send(Count).await.unwrap(), 0);
}

#[actix_rt::test]
async fn the_messages_of_one_turn_reach_a_session_in_one_delivery() {
    struct Counter(mpsc::UnboundedSender<usize>);
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Counter {
        type Result = ();
        fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
            match msg {
                Deliver::Frames(frames) => {
                    let _ = self.0.send(frame::text_payloads(&frames).len());
                }
                Deliver::FrameLists(lists) => {
                    let events = lists.iter().map(|f| frame::text_payloads(f).len());
                    let _ = self.0.send(events.sum());
                }
                Deliver::Close(..) => {}
            }
        }
    }
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let (tx, mut deliveries) = mpsc::unbounded_channel();
    let id = connect_guest(
        &hub,
        Counter(tx).start().recipient(),
        vec![(RoomName::general(), None)],
    );

    for n in 0..3 {
        hub.do_send(Say {
            from: id,
            room: RoomName::general(),
            text: format!("burst {n}"),
        });
    }

    let mut sizes = Vec::new();
    for _ in 0..2 {
        let size = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
            .await
            .expect("a delivery in time")
            .expect("the counter is alive");
        sizes.push(size);
    }
    assert_eq!(
        sizes,
        [1, 3],
        "the welcome alone, then the burst in one delivery"
    );
}

#[actix_rt::test]
async fn a_drain_tells_every_member_and_reports_when_the_last_leaves() {
    struct Watcher(mpsc::UnboundedSender<()>);
    impl Actor for Watcher {
        type Context = Context<Self>;
    }
    impl Handler<HubEmpty> for Watcher {
        type Result = ();
        fn handle(&mut self, _: HubEmpty, _: &mut Self::Context) {
            let _ = self.0.send(());
        }
    }
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let (session, mut rx) = probe();
    let id = connect_guest(&hub, session, vec![(RoomName::general(), None)]);
    let (empty_tx, mut empty_rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + Duration::from_secs(30);

    let told = hub
        .send(Drain {
            deadline,
            on_empty: Watcher(empty_tx).start().recipient(),
        })
        .await
        .unwrap();

    assert_eq!(told, 1);
    next_event(&mut rx).await; // welcome
    let notice = next_event(&mut rx).await;
    assert_eq!(notice["type"], "shutdown_notice");
    assert_eq!(notice["deadline_s"], 30);
    let retry = notice["retry_after_ms"].as_u64().unwrap();
    assert!(RETRY_AFTER_MS.contains(&retry), "{retry}");
    assert!(empty_rx.try_recv().is_err(), "not empty yet");
    hub.do_send(Disconnect { id });
    tokio::time::timeout(Duration::from_secs(5), empty_rx.recv())
        .await
        .expect("told when the last member left");
}

/// Connects `session` as a guest starting in `rooms`; its id.
fn connect_guest(
    hub: &Addr<ChatHub>,
    session: Recipient<Deliver>,
    rooms: Vec<(RoomName, Option<Since>)>,
) -> SessionId {
    let id = SessionId::next();
    hub.do_send(Connect {
        id,
        name: DisplayName::guest(id),
        user: None,
        session,
        deflate: None,
        rooms,
    });
    id
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

/// Connects a probe in `rooms`; its receiver has already taken the welcome.
async fn connect_in(
    hub: &Addr<ChatHub>,
    rooms: &[&str],
) -> (SessionId, mpsc::UnboundedReceiver<String>) {
    let (session, mut rx) = probe();
    let id = connect_guest(
        hub,
        session,
        rooms.iter().map(|r| (room(r), None)).collect(),
    );
    let welcome = next_event(&mut rx).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["rooms"].as_array().unwrap().len(), rooms.len());
    (id, rx)
}

#[actix_rt::test]
async fn a_message_reaches_only_its_room() {
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let (ana, mut ana_rx) = connect_in(&hub, &["ops"]).await;
    let (_, mut bo_rx) = connect_in(&hub, &["dev"]).await;
    let (_, mut both_rx) = connect_in(&hub, &["ops", "dev"]).await;

    hub.do_send(Say {
        from: ana,
        room: room("ops"),
        text: "deploy".into(),
    });

    for rx in [&mut ana_rx, &mut both_rx] {
        let echo = next_event(rx).await;
        assert_eq!(
            (echo["room"].as_str(), echo["message"].as_str()),
            (Some("ops"), Some("deploy"))
        );
    }
    hub.send(Count).await.unwrap();
    assert!(bo_rx.try_recv().is_err(), "dev heard ops");
}

#[actix_rt::test]
async fn a_turn_across_rooms_is_one_delivery_per_session() {
    struct Counter(mpsc::UnboundedSender<usize>);
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Counter {
        type Result = ();
        fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
            let batches = match msg {
                Deliver::Frames(_) => 1,
                Deliver::FrameLists(lists) => lists.len(),
                Deliver::Close(..) => 0,
            };
            let _ = self.0.send(batches);
        }
    }
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let (tx, mut deliveries) = mpsc::unbounded_channel();
    let id = connect_guest(
        &hub,
        Counter(tx).start().recipient(),
        vec![(room("a"), None), (room("b"), None)],
    );

    for name in ["a", "b", "a"] {
        hub.do_send(Say {
            from: id,
            room: room(name),
            text: "x".into(),
        });
    }
    hub.do_send(Notify {
        message: "all".into(),
        audience: Audience::Everyone,
        scope: Scope::Local,
    });

    let mut got = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(5), deliveries.recv()).await;
        got.push(next.expect("a delivery in time").expect("alive"));
    }
    assert_eq!(
        got,
        [1, 3],
        "the welcome, then everyone + a + b in one delivery"
    );
}

/// What a hub told its bridge, in order.
#[derive(Debug)]
enum ToBridge {
    Room(RoomChange),
    Read(ReadHistory),
    Store(StoreEvent),
    Publish,
}

/// Stands in for the Redis bridge: forwards everything the hub tells it.
struct BridgeProbe(mpsc::UnboundedSender<ToBridge>);

impl Actor for BridgeProbe {
    type Context = Context<Self>;
}

macro_rules! forward {
    ($msg:ty, $wrap:expr) => {
        impl Handler<$msg> for BridgeProbe {
            type Result = ();
            fn handle(&mut self, msg: $msg, _: &mut Self::Context) {
                let _ = self.0.send($wrap(msg));
            }
        }
    };
}
forward!(RoomChange, ToBridge::Room);
forward!(ReadHistory, ToBridge::Read);
forward!(StoreEvent, ToBridge::Store);
forward!(Publish, |_| ToBridge::Publish);

impl Handler<ReadPage> for BridgeProbe {
    type Result = Option<HistoryPage>;
    fn handle(&mut self, _: ReadPage, _: &mut Self::Context) -> Option<HistoryPage> {
        None
    }
}

/// A hub in Redis mode with a probe for its bridge.
fn redis_hub() -> (Addr<ChatHub>, mpsc::UnboundedReceiver<ToBridge>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let probe = BridgeProbe(tx).start();
    let link = BridgeLink {
        publish: probe.clone().recipient(),
        store: probe.clone().recipient(),
        read: probe.clone().recipient(),
        page: probe.clone().recipient(),
        rooms: probe.recipient(),
    };
    (
        ChatHub::new(ServerId::generate(), history(), Some(link)).start(),
        rx,
    )
}

/// Connects a probe in `ops` to a Redis-mode hub; the room's opening has
/// been told, its history read is still to be answered.
async fn connect_to_ops(
    hub: &Addr<ChatHub>,
    bridge: &mut mpsc::UnboundedReceiver<ToBridge>,
) -> (SessionId, mpsc::UnboundedReceiver<String>) {
    let (session, rx) = probe();
    let id = connect_guest(hub, session, vec![(room("ops"), None)]);
    let opened = told(bridge).await;
    assert!(
        matches!(&opened, ToBridge::Room(RoomChange::Opened(r)) if *r == room("ops")),
        "{opened:?}"
    );
    (id, rx)
}

async fn told(rx: &mut mpsc::UnboundedReceiver<ToBridge>) -> ToBridge {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(told)) => told,
        other => panic!("the bridge was told nothing: {other:?}"),
    }
}

/// Answers the next history read with `replay`.
async fn answer_read(
    hub: &Addr<ChatHub>,
    rx: &mut mpsc::UnboundedReceiver<ToBridge>,
    replay: Option<Replay>,
) {
    loop {
        if let ToBridge::Read(read) = told(rx).await {
            hub.do_send(HistoryRead {
                session: read.session,
                room: read.room,
                request: read.request,
                asked_since: read.since.is_some(),
                replay,
            });
            return;
        }
    }
}

fn stored(offset: u64) -> (u64, EventText) {
    (
        offset,
        EventText::from(format!(
            r#"{{"offset":{offset},"type":"echo","room":"ops"}}"#
        )),
    )
}

/// A history of `ops` holding the events at `offsets`, the last one its top.
fn history_of(offsets: &[u64]) -> Replay {
    Replay {
        epoch: Epoch::from_stored("e1".into()),
        offset: *offsets.last().expect("at least one event"),
        recovered: None,
        events: offsets.iter().map(|&offset| stored(offset)).collect(),
    }
}

/// The events at `offsets` of `ops` arrive from the room's channel.
fn arrive_live(hub: &Addr<ChatHub>, offsets: impl IntoIterator<Item = u64>) {
    for offset in offsets {
        let (offset, event) = stored(offset);
        hub.do_send(Remote {
            audience: Audience::Room(room("ops")),
            offset: Some(offset),
            event,
        });
    }
}

#[actix_rt::test]
async fn rooms_open_and_close_with_their_first_and_last_member() {
    let (hub, mut bridge) = redis_hub();
    let (session, mut one_rx) = probe();
    let one = connect_guest(&hub, session, vec![(room("ops"), None)]);
    assert!(
        matches!(told(&mut bridge).await, ToBridge::Room(RoomChange::Opened(r)) if r == room("ops"))
    );
    answer_read(&hub, &mut bridge, None).await;
    assert_eq!(next_event(&mut one_rx).await["type"], "welcome");

    hub.do_send(Leave {
        id: one,
        room: room("ops"),
    });

    assert_eq!(next_event(&mut one_rx).await["type"], "left");
    assert!(
        matches!(told(&mut bridge).await, ToBridge::Room(RoomChange::Closed(r)) if r == room("ops"))
    );
    let census = hub.send(Census).await.unwrap();
    assert!(
        census.rooms.is_empty(),
        "an empty room is forgotten: {census:?}"
    );
}

#[actix_rt::test]
async fn a_join_waiting_for_its_history_gets_what_came_after_it_once() {
    let (hub, mut bridge) = redis_hub();
    let (_, mut rx) = connect_to_ops(&hub, &mut bridge).await;

    // Live events arrive while the history is read: 5 will be in the
    // history too, 6 and 7 not.
    arrive_live(&hub, [5, 6, 7]);
    answer_read(&hub, &mut bridge, Some(history_of(&[4, 5]))).await;

    let welcome = next_event(&mut rx).await;
    assert_eq!(welcome["type"], "welcome", "always first: {welcome}");
    let joined = &welcome["rooms"][0];
    assert_eq!(
        (joined["epoch"].as_str(), joined["offset"].as_u64()),
        (Some("e1"), Some(5))
    );
    let history: Vec<u64> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(history, [4, 5]);
    for expected in [6, 7] {
        assert_eq!(next_event(&mut rx).await["offset"], expected);
    }
    hub.send(Count).await.unwrap();
    assert!(rx.try_recv().is_err(), "5 came twice");
}

#[actix_rt::test]
async fn with_redis_a_message_is_stored_before_local_members_get_it() {
    let (hub, mut bridge) = redis_hub();
    let (id, mut rx) = connect_to_ops(&hub, &mut bridge).await;
    answer_read(&hub, &mut bridge, None).await;
    assert_eq!(next_event(&mut rx).await["type"], "welcome");

    hub.do_send(Say {
        from: id,
        room: room("ops"),
        text: "hi".into(),
    });

    let ToBridge::Store(store) = told(&mut bridge).await else {
        panic!("a say is stored first");
    };
    let event: serde_json::Value = serde_json::from_str(&store.event).unwrap();
    assert_eq!(
        event["offset"], 0,
        "a place for Redis to number it: {event}"
    );
    hub.send(Count).await.unwrap();
    assert!(rx.try_recv().is_err(), "not delivered before it is stored");
    hub.do_send(Stored {
        room: room("ops"),
        offset: Some(1),
        event: crate::redis::history::with_offset(&store.event, 1),
    });
    let echo = next_event(&mut rx).await;
    assert_eq!(
        (echo["offset"].as_u64(), echo["message"].as_str()),
        (Some(1), Some("hi"))
    );
}

#[actix_rt::test]
async fn a_room_notice_counts_its_members_here_and_on_peers() {
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let (_, mut ops_rx) = connect_in(&hub, &["ops"]).await;
    let (_, mut dev_rx) = connect_in(&hub, &["dev"]).await;
    hub.do_send(PeerCount {
        clients: 7,
        rooms: [(room("ops"), 3)].into_iter().collect(),
        users: HashMap::new(),
        rosters: HashMap::new(),
    });
    let notify = |audience| Notify {
        message: "hi".into(),
        audience,
        scope: Scope::Everywhere,
    };

    let to_ops = hub.send(notify(Audience::Room(room("ops")))).await.unwrap();
    let to_nobody = hub
        .send(notify(Audience::Room(room("nobody"))))
        .await
        .unwrap();
    let to_all = hub.send(notify(Audience::Everyone)).await.unwrap();

    assert_eq!((to_ops, to_nobody, to_all), (4, 0, 9));
    let notice = next_event(&mut ops_rx).await;
    assert_eq!(notice["room"], "ops");
    let everyone = next_event(&mut dev_rx).await;
    assert!(everyone.get("room").is_none(), "{everyone}");
    let rooms = hub.send(ListRooms).await.unwrap();
    assert_eq!(rooms, [(room("dev"), 1), (room("ops"), 4)]);
}

#[actix_rt::test]
async fn single_room_sessions_get_only_their_room_when_many_rooms_speak_at_once() {
    let hub = ChatHub::new(ServerId::generate(), history(), None).start();
    let (both, _both_rx) = connect_in(&hub, &["a", "b"]).await;
    let (ana, mut ana_rx) = connect_in(&hub, &["a"]).await;
    let (bo, mut bo_rx) = connect_in(&hub, &["b"]).await;
    // With the two-room session gone, no session is in more than one room.
    hub.do_send(Disconnect { id: both });

    for (from, name) in [(ana, "a"), (bo, "b"), (ana, "a")] {
        hub.do_send(Say {
            from,
            room: room(name),
            text: name.into(),
        });
    }

    for (rx, name, count) in [(&mut ana_rx, "a", 2), (&mut bo_rx, "b", 1)] {
        for _ in 0..count {
            assert_eq!(next_event(rx).await["room"], name);
        }
    }
    hub.send(Count).await.unwrap();
    assert!(ana_rx.try_recv().is_err() && bo_rx.try_recv().is_err());
}

#[actix_rt::test]
async fn a_history_ahead_of_the_live_events_skips_them_until_they_catch_up() {
    let (hub, mut bridge) = redis_hub();
    let (_, mut rx) = connect_to_ops(&hub, &mut bridge).await;
    // The stream already has 7; its live copies are still on their way.
    answer_read(&hub, &mut bridge, Some(history_of(&[6, 7]))).await;
    assert_eq!(next_event(&mut rx).await["type"], "welcome");

    arrive_live(&hub, [6, 7, 8, 9]);

    for expected in [8, 9] {
        assert_eq!(next_event(&mut rx).await["offset"], expected);
    }
    hub.send(Count).await.unwrap();
    assert!(rx.try_recv().is_err());
    let census = hub.send(Census).await.unwrap();
    assert_eq!(census.rooms, [(room("ops"), 1)]);
}

#[actix_rt::test]
async fn a_joiner_that_catches_up_mid_turn_gets_none_of_its_history_again() {
    let (hub, mut bridge) = redis_hub();
    let (_, mut member_rx) = connect_to_ops(&hub, &mut bridge).await;
    answer_read(&hub, &mut bridge, None).await;
    assert_eq!(next_event(&mut member_rx).await["type"], "welcome");

    // A second session joins the busy room; its history already has 7.
    let (session, mut joiner_rx) = probe();
    connect_guest(&hub, session, vec![(room("ops"), None)]);
    answer_read(&hub, &mut bridge, Some(history_of(&[6, 7]))).await;
    assert_eq!(next_event(&mut joiner_rx).await["type"], "welcome");

    // 6 and 7 come live in the same turn as 8, which lets the joiner in:
    // the member gets all of them, the joiner only what its history lacks.
    arrive_live(&hub, [6, 7, 8, 9]);

    for expected in [6, 7, 8, 9] {
        assert_eq!(next_event(&mut member_rx).await["offset"], expected);
    }
    for expected in [8, 9] {
        assert_eq!(next_event(&mut joiner_rx).await["offset"], expected);
    }
    hub.send(Count).await.unwrap();
    assert!(joiner_rx.try_recv().is_err(), "more than 8 and 9");
}
