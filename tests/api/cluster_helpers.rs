//! A real Redis Cluster per test: three masters and three replicas of
//! `redis-server` on free loopback ports, in a temporary folder, created with
//! `redis-cli --cluster create` and stopped (folder removed) on drop.
//!
//! The node timeout is short (2 s: shorter makes a loaded test machine
//! fail over by mistake), so a killed master's replica takes over
//! within a few seconds; `cluster-require-full-coverage no` keeps the other
//! shards serving meanwhile, as a production cluster carrying chatd should.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::WAIT;
use crate::redis_helpers::installed_or_skip;

/// How long a cluster may take to form, or to fail over.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(30);

/// One node: its client port, its cluster-bus port, its process.
struct Node {
    port: u16,
    bus: u16,
    child: Option<Child>,
}

/// A running cluster this test started.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts and creates the cluster, or `None` (after saying so loudly)
    /// without `redis-server`.
    ///
    /// # Panics
    /// Under `CI=true` without `redis-server`, or when the cluster does not
    /// form within [`CLUSTER_WAIT`].
    pub fn start_or_skip(test: &str) -> Option<Self> {
        if !installed_or_skip(test) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "chatd-cluster-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let nodes = (0..6)
            .map(|_| Node {
                port: free_port(),
                bus: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Self { dir, nodes };
        for n in 0..cluster.nodes.len() {
            cluster.start_node(n);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_until_ok();
        Some(cluster)
    }

    fn start_node(&mut self, n: usize) {
        let dir = self.dir.join(format!("node{n}"));
        std::fs::create_dir_all(&dir).expect("a node folder");
        let node = &mut self.nodes[n];
        let child = Command::new("redis-server")
            .args(["--port", &node.port.to_string()])
            .args(["--cluster-port", &node.bus.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        node.child = Some(child);
        let port = node.port;
        let deadline = Instant::now() + WAIT;
        while query::<String>(port, &redis::cmd("PING")).is_err() {
            assert!(Instant::now() < deadline, "node {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The seed nodes, as `REDIS_CLUSTER_NODES` takes them.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port of the master that owns `key`'s slot (a channel name hashes
    /// as a key does).
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.live_port();
        let slot: u16 = query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .expect("CLUSTER KEYSLOT answers");
        self.slots()
            .into_iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .map(|(_, _, master)| master)
            .expect("every slot has a master")
    }

    /// Rooms named `<prefix>0`, `<prefix>1`, ... one per master, so that
    /// each lives on a different shard.
    pub fn rooms_on_each_master(&self, prefix: &str) -> Vec<(String, u16)> {
        let mut rooms: Vec<(String, u16)> = Vec::new();
        for n in 0..1000 {
            let room = format!("{prefix}{n}");
            let master = self.master_of(&format!("chatd:events:room:{room}"));
            if rooms.iter().all(|(_, m)| *m != master) {
                rooms.push((room, master));
            }
            if rooms.len() == 3 {
                return rooms;
            }
        }
        panic!("no rooms found on three masters: {rooms:?}");
    }

    /// (first slot, last slot, master port) per slot range.
    fn slots(&self) -> Vec<(u16, u16, u16)> {
        let ranges: Vec<redis::Value> = query(self.live_port(), redis::cmd("CLUSTER").arg("SLOTS"))
            .expect("CLUSTER SLOTS answers");
        ranges
            .into_iter()
            .filter_map(|range| {
                let redis::Value::Array(items) = range else {
                    return None;
                };
                let from: u16 = redis::from_redis_value(items.first()?.clone()).ok()?;
                let to: u16 = redis::from_redis_value(items.get(1)?.clone()).ok()?;
                let redis::Value::Array(master) = items.get(2)? else {
                    return None;
                };
                let port: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
                Some((from, to, port))
            })
            .collect()
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a node is running")
            .port
    }

    /// Kills the node on `port` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Has the replica of the master on `port` take over (CLUSTER FAILOVER:
    /// the old master stays, as a replica), and waits until it has.
    pub fn fail_over_gracefully(&self, port: u16) {
        let info: String = query(port, redis::cmd("INFO").arg("replication")).expect("INFO");
        let replica: u16 = info
            .lines()
            .find_map(|l| l.strip_prefix("slave0:"))
            .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("port=")))
            .and_then(|v| v.parse().ok())
            .expect("the master has a replica");
        let _: String = query(replica, redis::cmd("CLUSTER").arg("FAILOVER"))
            .expect("CLUSTER FAILOVER is accepted");
        let deadline = Instant::now() + CLUSTER_WAIT;
        while self.owns_slots(port) || !self.owns_slots(replica) || !self.all_ok() {
            assert!(
                Instant::now() < deadline,
                "{replica} did not take over from {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        for port in ports {
            self.kill(port);
        }
    }

    /// Starts every stopped node again on its ports with its cluster
    /// config (the data is gone, as after a restart without persistence),
    /// and waits until the cluster is whole.
    pub fn restart_stopped(&mut self) {
        for n in 0..self.nodes.len() {
            if self.nodes[n].child.is_none() {
                self.start_node(n);
            }
        }
        self.wait_until_ok();
    }

    /// Waits until the killed master `port` owns no slot any more and every
    /// live node says `cluster_state:ok`; answers how long that took.
    pub fn wait_for_failover(&self, port: u16) -> Duration {
        let started = Instant::now();
        loop {
            let moved = self.slots().iter().all(|(_, _, master)| *master != port);
            if moved && self.all_ok() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < CLUSTER_WAIT,
                "no replica took over from {port} within {CLUSTER_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn all_ok(&self) -> bool {
        self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
            query::<String>(n.port, redis::cmd("CLUSTER").arg("INFO"))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// Whether the node on `port` still owns slots (a killed master does
    /// until its replica takes over).
    pub fn owns_slots(&self, port: u16) -> bool {
        self.slots().iter().any(|(_, _, master)| *master == port)
    }

    /// Waits until the replica of the master on `port` has everything the
    /// master has written, and answers how long that took: the window in
    /// which an acknowledged write exists on the master alone.
    pub fn wait_replicated(&self, port: u16) -> Duration {
        let started = Instant::now();
        let info = |port: u16| -> String {
            query(port, redis::cmd("INFO").arg("replication")).expect("INFO answers")
        };
        let field = |info: &str, name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let master = info(port);
        let written = field(&master, "master_repl_offset:").expect("a replication offset");
        let replica: u16 = master
            .lines()
            .find_map(|l| l.strip_prefix("slave0:"))
            .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("port=")))
            .and_then(|v| v.parse().ok())
            .expect("the master has a replica");
        while field(&info(replica), "slave_repl_offset:").unwrap_or(0) < written {
            assert!(
                started.elapsed() < CLUSTER_WAIT,
                "the replica of {port} never caught up"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        started.elapsed()
    }

    /// Whether every master has a replica that finished its first sync.
    fn replicas_in_sync(&self) -> bool {
        let masters: Vec<u16> = self.slots().iter().map(|(_, _, m)| *m).collect();
        masters.iter().all(|port| {
            query::<String>(*port, redis::cmd("INFO").arg("replication"))
                .is_ok_and(|info| info.contains("slave0:") && info.contains("state=online"))
        })
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            let covered = self
                .slots()
                .iter()
                .map(|(f, t, _)| u32::from(t - f) + 1)
                .sum::<u32>();
            if covered == 16384 && self.all_ok() && self.replicas_in_sync() {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The calls of `command` (such as `evalsha`) each live master served.
    pub fn calls_per_master(&self, command: &str) -> Vec<(u16, u64)> {
        let mut masters: Vec<u16> = self.slots().iter().map(|(_, _, m)| *m).collect();
        masters.sort_unstable();
        masters.dedup();
        masters
            .into_iter()
            .map(|port| {
                let stats: String =
                    query(port, redis::cmd("INFO").arg("commandstats")).expect("INFO answers");
                (port, calls_of(&stats, command))
            })
            .collect()
    }
}

/// `calls=` of `cmdstat_<command>` in an `INFO commandstats` answer.
pub fn calls_of(stats: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command on the node at `port`, over a short-lived connection.
fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    cmd.query(&mut conn)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
