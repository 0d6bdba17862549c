//! A throwaway Redis Cluster for `suite --cluster`: three masters and three
//! replicas of `redis-server` on free loopback ports, in a temporary folder,
//! created with `redis-cli --cluster create`, the same way the tests make
//! theirs; and the per-shard command counts (`INFO commandstats`) that show
//! how the load spread.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::suite::{free_port, redis_server, spawn_tied, Process};

/// A running cluster; its nodes are killed and its folder removed on drop.
pub(crate) struct Cluster {
    ports: Vec<u16>,
    dir: PathBuf,
    _nodes: Vec<Process>,
}

/// What one master served.
pub(crate) struct ShardLoad {
    pub port: u16,
    /// Room appends (the history script: store and SPUBLISH).
    pub appends: u64,
    /// Every command, appends included.
    pub commands: u64,
}

impl Cluster {
    /// Starts six nodes (pinned to `cpu` when given) and makes a cluster of them.
    ///
    /// # Errors
    /// A node does not start, or the cluster does not form within 60 s (a loaded machine has been seen to need more than 30).
    pub(crate) fn start(cpu: Option<&str>) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("chatd-bench-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|err| format!("no temporary folder: {err}"))?;
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for n in 0..6 {
            let (port, bus) = (free_port()?, free_port()?);
            let node_dir = dir.join(format!("node{n}"));
            std::fs::create_dir_all(&node_dir).map_err(|err| format!("no node folder: {err}"))?;
            let mut command = redis_server(cpu, port);
            command
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-require-full-coverage", "no"])
                .arg("--dir")
                .arg(&node_dir);
            let child = spawn_tied(&mut command)
                .map_err(|err| format!("cannot start redis-server: {err}"))?;
            nodes.push(Process::from(child));
            ports.push(port);
        }
        let cluster = Self {
            ports,
            dir,
            _nodes: nodes,
        };
        cluster.wait(|port| query::<String>(port, &redis::cmd("PING")).is_ok())?;
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run redis-cli: {err}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            ));
        }
        cluster.wait(|port| {
            query::<String>(port, redis::cmd("CLUSTER").arg("INFO"))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })?;
        Ok(cluster)
    }

    /// Polls until `ready` holds on every node, for at most 60 s.
    fn wait(&self, ready: impl Fn(u16) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ports.iter().all(|port| ready(*port)) {
            if Instant::now() > deadline {
                return Err("the cluster did not form within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `REDIS_CLUSTER_NODES` for chatd.
    pub(crate) fn seeds(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        seeds.join(",")
    }

    /// Forgets every node's command counts.
    ///
    /// # Errors
    /// A node did not answer.
    pub(crate) fn reset_stats(&self) -> Result<(), String> {
        for port in &self.ports {
            query::<String>(*port, redis::cmd("CONFIG").arg("RESETSTAT"))
                .map_err(|err| format!("CONFIG RESETSTAT on {port}: {err}"))?;
        }
        Ok(())
    }

    /// What each master served since the last [`Self::reset_stats`].
    ///
    /// # Errors
    /// A node did not answer.
    pub(crate) fn load_per_master(&self) -> Result<Vec<ShardLoad>, String> {
        let mut loads = Vec::new();
        for port in &self.ports {
            let info: String = query(*port, redis::cmd("INFO").arg("replication"))
                .map_err(|err| format!("INFO on {port}: {err}"))?;
            if !info.contains("role:master") {
                continue;
            }
            let stats: String = query(*port, redis::cmd("INFO").arg("commandstats"))
                .map_err(|err| format!("INFO on {port}: {err}"))?;
            let calls = |line: &str| -> u64 {
                line.split_once(":calls=")
                    .and_then(|(_, rest)| rest.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            let lines: Vec<&str> = stats
                .lines()
                .filter(|l| l.starts_with("cmdstat_"))
                .collect();
            loads.push(ShardLoad {
                port: *port,
                appends: lines
                    .iter()
                    .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
                    .map(|l| calls(l))
                    .sum(),
                commands: lines.iter().map(|l| calls(l)).sum(),
            });
        }
        Ok(loads)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command on the node at `port`.
fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    cmd.query(&mut conn)
}
