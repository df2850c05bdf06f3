//! NATS JetStream servers for tests: a cluster of `nats-server` children on
//! free loopback ports, each with its own store directory in a temp dir.
//! Dropping the cluster kills every child (also when the test panics), and
//! each child is told to die with the test thread that started it, so a
//! killed test run leaves no server behind.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect its JetStream meta leader.
const READY_WITHIN: Duration = Duration::from_secs(30);

struct Node {
    client_port: u16,
    cluster_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Cluster {
    /// Starts `size` servers (1: a lone server; more: one JetStream cluster)
    /// and waits until JetStream answers on every one of them.
    pub fn start(size: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, &(client_port, cluster_port)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let mut text = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client_port}\n\
                 jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 2GB }}\n",
                store.display()
            );
            if size > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &(_, p))| format!("nats-route://127.0.0.1:{p}"))
                    .collect();
                text.push_str(&format!(
                    "cluster {{ name: ringledger-test, listen: 127.0.0.1:{cluster_port}, routes: [{}] }}\n",
                    routes.join(", ")
                ));
            }
            let config = dir.path().join(format!("n{i}.conf"));
            fs::write(&config, text).expect("write server config");
            nodes.push(Node {
                client_port,
                cluster_port,
                config,
                child: None,
            });
        }
        let mut cluster = Cluster { dir, nodes };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_ready();
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let log = self.dir.path().join(format!("n{i}.log"));
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("server log");
        let mut command = Command::new("nats-server");
        command
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; between fork and exec nothing else runs in the child.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        node.child = Some(command.spawn().expect("nats-server is installed"));
    }

    /// Every server's client URL, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// The servers' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let path = self.dir.path().join(format!("n{i}.log"));
                format!(
                    "--- n{i} (cluster port {}) ---\n{}",
                    self.nodes[i].cluster_port,
                    fs::read_to_string(path).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Waits until JetStream answers account info on every live server,
    /// which needs a meta leader in a cluster.
    pub fn wait_ready(&self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let deadline = Instant::now() + READY_WITHIN;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("nats://127.0.0.1:{}", node.client_port);
            loop {
                // A raw request: the client's typed account info does not
                // parse this server version's answer.
                let ready = rt.block_on(async {
                    let client = async_nats::ConnectOptions::new()
                        .connection_timeout(Duration::from_secs(1))
                        .request_timeout(Some(Duration::from_secs(1)))
                        .connect(url.as_str())
                        .await
                        .ok()?;
                    let answer = client.request("$JS.API.INFO", "".into()).await.ok()?;
                    let answer = String::from_utf8_lossy(&answer.payload).to_string();
                    (answer.contains("account_info_response") && !answer.contains("\"error\""))
                        .then_some(())
                });
                if ready.is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "JetStream not ready on {url} within {READY_WITHIN:?}\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.wait_placement(&rt, deadline);
    }

    /// Waits until a stream with a replica on every live server can be
    /// placed: account info answers as soon as there is a meta leader, but
    /// until that leader knows every peer, creating a replicated stream
    /// fails with "no suitable peers for placement" (seen in CI). Creates
    /// and deletes a small memory stream until it works.
    fn wait_placement(&self, rt: &tokio::runtime::Runtime, deadline: Instant) {
        let live: Vec<_> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        let Some(first) = live.first() else {
            return;
        };
        let url = format!("nats://127.0.0.1:{}", first.client_port);
        let create = format!(
            r#"{{"name":"ready-probe","subjects":["ready-probe"],"num_replicas":{},"storage":"memory"}}"#,
            live.len()
        );
        loop {
            let placed = rt.block_on(async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(1))
                    .request_timeout(Some(Duration::from_secs(2)))
                    .connect(url.as_str())
                    .await
                    .ok()?;
                let answer = client
                    .request("$JS.API.STREAM.CREATE.ready-probe", create.clone().into())
                    .await
                    .ok()?;
                let created = String::from_utf8_lossy(&answer.payload).to_string();
                let _ = client
                    .request("$JS.API.STREAM.DELETE.ready-probe", "".into())
                    .await;
                (!created.contains("\"error\"")).then_some(())
            });
            if placed.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no replicated stream could be placed on {url} within {READY_WITHIN:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Opens a follower, retrying while the stream is unavailable (a busy
/// machine can make a JetStream request outlast the client's timeout).
pub fn open_follower(
    config: &ringledger::replication::ReplicationConfig,
    dir: &std::path::Path,
) -> ringledger::replication::Follower {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        match ringledger::replication::Follower::open(config, dir) {
            Ok(follower) => return follower,
            Err(ringledger::replication::ReplicationError::Unavailable(why))
                if Instant::now() < deadline =>
            {
                eprintln!("follower not open yet: {why}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot open a follower: {e}"),
        }
    }
}
