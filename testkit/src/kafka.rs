//! A real Apache Kafka broker for tests: the jars from Maven Central (`scripts/kafka.sh`), run
//! as plain JVM processes with SASL/PLAIN users, an ACL authorizer and its
//! `kafka.authorizer.logger` at DEBUG written to a file of its own.
//!
//! - Kafka 4.x: KRaft in combined mode (one process is broker and controller), the storage
//!   formatted first with `kafka.tools.StorageTool`, `StandardAuthorizer`, log4j2.
//! - Kafka 3.x: ZooKeeper mode (`QuorumPeerMain` from the zookeeper jar Kafka depends on),
//!   `AclAuthorizer`, reload4j (log4j 1).
//!
//! Both listeners (clients and, in KRaft, the controller) speak SASL_PLAINTEXT with the PLAIN
//! mechanism; the broker talks to itself as `admin`, the only super user; every other user is a
//! principal of its own (`User:<name>`, password `<name>-secret`) with only what ACLs grant
//! (`allow.everyone.if.no.acl.found=false`). The authorizer log rolls over at a size the caller
//! picks (log4j's rolling appender), so tests can follow it across rotations.
//!
//! [`Broker`] stops its JVMs when dropped; a watchdog ([`crate::process::spawn_watchdog`]) kills
//! them and removes the broker's folder if the test process dies first (SIGTERM, SIGKILL). With
//! [`BrokerOptions::netns`] the JVMs run in a network namespace (`ip netns exec`, as root), as a
//! pod's would.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::process::{Running, TempDir};

/// The Kafka 4 version the tests run (KRaft; served by Maven Central, runs on Java 17).
pub const KAFKA_4: &str = "4.1.1";
/// The Kafka 3 version the tests run (ZooKeeper mode).
pub const KAFKA_3: &str = "3.9.1";

/// The super user's name.
pub const ADMIN: &str = "admin";

/// How long a JVM may take to start a broker (or ZooKeeper) on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a client tool may run before it is stopped (`timeout`).
const CLIENT_TIMEOUT_SECONDS: u32 = 120;

/// The password of `user` (the test brokers' users are not secrets).
pub fn password(user: &str) -> String {
    format!("{user}-secret")
}

/// The jars of Kafka `version` (`target/kafka/VERSION/libs`), resolved from Maven Central by
/// `scripts/kafka.sh` the first time (its progress shows on stderr), cached after.
pub fn libs(version: &str) -> Result<PathBuf> {
    let root = crate::need::workspace_root();
    let script = root.join("scripts/kafka.sh");
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .arg(version)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} (needs bash)", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {version} failed ({}): it needs java 17 and mvn (apt-get install openjdk-17-jre-headless maven) and Maven Central; its error is above",
            script.display(),
            output.status
        );
    }
    let libs = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    anyhow::ensure!(
        libs.join(".complete").exists(),
        "{} printed {}, which holds no complete set of jars; remove it and run the script again",
        script.display(),
        libs.display()
    );
    if started.elapsed() > Duration::from_secs(1) {
        eprintln!("kafka {version}: jars ready in {:.1?}", started.elapsed());
    }
    Ok(libs)
}

/// The Kafka versions this module knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 4.x: KRaft combined mode, log4j2.
    Kraft,
    /// 3.x: ZooKeeper mode, log4j 1 (reload4j).
    ZooKeeper,
}

/// Kafka's command-line tools, by what they do (their classes moved between versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `kafka-acls`.
    Acls,
    /// `kafka-topics`.
    Topics,
    /// `kafka-console-producer` (lines from stdin).
    ConsoleProducer,
    /// `kafka-console-consumer`.
    ConsoleConsumer,
}

impl Tool {
    fn class(self, mode: Mode) -> &'static str {
        match (self, mode) {
            (Tool::Acls, Mode::Kraft) => "org.apache.kafka.tools.AclCommand",
            (Tool::Acls, Mode::ZooKeeper) => "kafka.admin.AclCommand",
            (Tool::Topics, _) => "org.apache.kafka.tools.TopicCommand",
            (Tool::ConsoleProducer, Mode::Kraft) => "org.apache.kafka.tools.ConsoleProducer",
            (Tool::ConsoleProducer, Mode::ZooKeeper) => "kafka.tools.ConsoleProducer",
            (Tool::ConsoleConsumer, _) => "org.apache.kafka.tools.consumer.ConsoleConsumer",
        }
    }

    /// The flag that takes the client's properties file (SASL settings).
    fn config_flag(self) -> &'static str {
        match self {
            Tool::Acls | Tool::Topics => "--command-config",
            Tool::ConsoleProducer => "--producer.config",
            Tool::ConsoleConsumer => "--consumer.config",
        }
    }
}

/// What broker to start.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// A Kafka version `scripts/kafka.sh` can fetch: 4.x (KRaft) or 3.x (ZooKeeper).
    pub version: String,
    /// The network namespace to run the JVMs in (as root), or `None` for this process's.
    pub netns: Option<String>,
    /// The address the client listener binds to and advertises (the pod's IP, or 127.0.0.1).
    pub host: String,
    /// The client users besides [`ADMIN`], each its own principal `User:<name>`.
    pub users: Vec<String>,
    /// The authorizer log rolls over when it would grow past this many KiB.
    pub authorizer_log_max_kib: u32,
}

impl BrokerOptions {
    pub fn new(version: &str, host: &str, users: &[&str]) -> Self {
        BrokerOptions {
            version: version.to_owned(),
            netns: None,
            host: host.to_owned(),
            users: users.iter().map(|u| (*u).to_owned()).collect(),
            authorizer_log_max_kib: 1024,
        }
    }
}

/// A running Kafka broker (and its ZooKeeper for 3.x). Dropping it kills the JVMs and removes
/// its folder (data, configuration, logs).
pub struct Broker {
    // Dropped in this order: the broker, ZooKeeper, then the folder.
    kafka: Option<Running>,
    zookeeper: Option<Running>,
    options: BrokerOptions,
    mode: Mode,
    libs: PathBuf,
    port: u16,
    starts: u32,
    dir: TempDir,
}

impl Broker {
    /// Fetches the jars if needed, writes the configuration, formats the storage (KRaft) or
    /// starts ZooKeeper, and starts the broker; returns once it serves.
    pub fn start(options: BrokerOptions) -> Result<Broker> {
        let mode = match options.version.split('.').next() {
            Some("4") => Mode::Kraft,
            Some("3") => Mode::ZooKeeper,
            _ => bail!("Kafka {} is neither 3.x nor 4.x; pick one of those", options.version),
        };
        if crate::need::find_command("java").is_none() {
            bail!("Kafka needs java 17 or later: apt-get install openjdk-17-jre-headless maven");
        }
        let libs = libs(&options.version)?;
        let dir = TempDir::new(&format!("kafka-{}", options.version));
        crate::process::spawn_watchdog(
            "testkit-kafka-watchdog",
            dir.path(),
            r#"for pid in "$TK_DIR"/*.pid; do [ -f "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null; done
rm -rf "$TK_DIR"
"#,
            &[],
            "the Kafka broker",
        )?;
        let [port, controller_port, zookeeper_port] = crate::process::free_ports::<3>()?;
        let mut broker =
            Broker { kafka: None, zookeeper: None, options, mode, libs, port, starts: 0, dir };
        broker.write_config(controller_port, zookeeper_port)?;
        match mode {
            Mode::Kraft => broker.format_storage()?,
            Mode::ZooKeeper => broker.start_zookeeper(zookeeper_port)?,
        }
        broker.start_kafka()?;
        Ok(broker)
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.options.host, self.port)
    }

    /// The Kafka version running.
    pub fn version(&self) -> &str {
        &self.options.version
    }

    /// The authorizer log the broker is writing now.
    pub fn authorizer_log(&self) -> PathBuf {
        self.dir.path().join("logs/kafka-authorizer.log")
    }

    /// Every authorizer log file there is: those rolled over (`kafka-authorizer.log.1`, ...;
    /// log4j 1 keeps the newest as `.1`, log4j2 as the highest index) and the current one.
    pub fn authorizer_logs(&self) -> Result<Vec<PathBuf>> {
        let current = self.authorizer_log();
        let mut rolled = Vec::new();
        let logs = self.dir.path().join("logs");
        for entry in std::fs::read_dir(&logs).with_context(|| format!("{}", logs.display()))? {
            let path = entry?.path();
            let index = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("kafka-authorizer.log."))
                .and_then(|i| i.parse::<u32>().ok());
            if let Some(index) = index {
                rolled.push((index, path));
            }
        }
        rolled.sort();
        let mut files: Vec<PathBuf> = rolled.into_iter().map(|(_, p)| p).collect();
        if current.exists() {
            files.push(current);
        }
        Ok(files)
    }

    /// The broker's own output (stdout and stderr of the current JVM), for failure messages.
    pub fn server_log(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.out", self.starts))
    }

    /// The client properties (SASL/PLAIN) of `user`.
    pub fn client_config(&self, user: &str) -> PathBuf {
        self.dir.path().join(format!("client-{user}.properties"))
    }

    /// Stops the broker (SIGTERM, a controlled shutdown; SIGKILL after 60 s) and starts it
    /// again on the same data, configuration and logs; returns once it serves again.
    pub fn restart(&mut self) -> Result<()> {
        let started = Instant::now();
        if let Some(mut kafka) = self.kafka.take() {
            let pid = kafka.0.id();
            eprintln!("kafka {}: stopping the broker (pid {pid})", self.options.version);
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while kafka.0.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    eprintln!(
                        "kafka {}: the broker ignored SIGTERM for 60 s; killing it",
                        self.options.version
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(kafka);
            eprintln!(
                "kafka {}: broker stopped in {:.1?}",
                self.options.version,
                started.elapsed()
            );
        }
        self.start_kafka()
    }

    /// A Kafka tool run by `user` from network namespace `netns` (or this process's) against
    /// this broker: `java ... <class> --bootstrap-server B <config flag> <user's config> args`,
    /// stopped after two minutes (`timeout`). Quiet (warnings and errors only, on stderr).
    pub fn client(&self, netns: Option<&str>, user: &str, tool: Tool, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command.arg(CLIENT_TIMEOUT_SECONDS.to_string());
        if let Some(ns) = netns {
            command.args(["ip", "netns", "exec", ns]);
        }
        command.arg("java").args(self.jvm_flags("128m", "32m", "tools-log"));
        command
            .arg(tool.class(self.mode))
            .args(["--bootstrap-server", &self.bootstrap(), tool.config_flag()])
            .arg(self.client_config(user))
            .args(args)
            .current_dir(self.dir.path());
        command
    }

    /// Runs [`client`](Self::client) with `input` on its stdin; its output, whatever its exit
    /// status (a refused client may exit 0 or not; the caller decides). An error only when it
    /// cannot run at all.
    pub fn run_client(
        &self,
        netns: Option<&str>,
        user: &str,
        tool: Tool,
        args: &[&str],
        input: &str,
    ) -> Result<Output> {
        let started = Instant::now();
        let mut command = self.client(netns, user, tool, args);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).context("writing to the client's stdin")?;
        }
        let output = child.wait_with_output().context("waiting for the client")?;
        eprintln!(
            "kafka {}: {user} ran {tool:?} {args:?} in {:.1?}: {}",
            self.options.version,
            started.elapsed(),
            output.status
        );
        Ok(output)
    }

    /// `kafka-acls` as [`ADMIN`] from the broker's namespace with `args` (e.g. `--add
    /// --allow-principal User:x --operation Read --topic t`); an error with the tool's output if
    /// it fails.
    pub fn acls(&self, args: &[&str]) -> Result<String> {
        let netns = self.options.netns.clone();
        let output = self.run_client(netns.as_deref(), ADMIN, Tool::Acls, args, "")?;
        if !output.status.success() {
            bail!(
                "kafka-acls {args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    // === Start-up ===

    /// `-Xmx.. -Xms.. -cp libs/* -D<logging configuration>` for a JVM of this version, with
    /// the logging configuration `config` (`server-log` or `tools-log`).
    fn jvm_flags(&self, max_heap: &str, min_heap: &str, config: &str) -> Vec<String> {
        let logging = match self.mode {
            Mode::Kraft => format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join(format!("{config}4j2.properties")).display()
            ),
            Mode::ZooKeeper => format!(
                "-Dlog4j.configuration=file:{}",
                self.dir.path().join(format!("{config}4j.properties")).display()
            ),
        };
        vec![
            format!("-Xmx{max_heap}"),
            format!("-Xms{min_heap}"),
            "-XX:+UseSerialGC".into(),
            "-XX:TieredStopAtLevel=1".into(),
            "-Djava.awt.headless=true".into(),
            "-cp".into(),
            format!("{}/*", self.libs.display()),
            logging,
        ]
    }

    /// A JVM command (in the broker's namespace, if any) with the broker's flags.
    fn java(&self, max_heap: &str, min_heap: &str, config: &str) -> Command {
        let mut command = match &self.options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "java"]);
                c
            }
            None => Command::new("java"),
        };
        command.args(self.jvm_flags(max_heap, min_heap, config)).current_dir(self.dir.path());
        command
    }

    fn write(&self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn write_config(&self, controller_port: u16, zookeeper_port: u16) -> Result<()> {
        let dir = self.dir.path();
        std::fs::create_dir_all(dir.join("logs"))?;
        let host = &self.options.host;
        let port = self.port;
        let plain = "org.apache.kafka.common.security.plain.PlainLoginModule required";
        let admin_password = password(ADMIN);
        let mut users = format!("user_{ADMIN}=\"{admin_password}\"");
        for user in &self.options.users {
            users.push_str(&format!(" user_{user}=\"{}\"", password(user)));
        }
        let myself = format!("username=\"{ADMIN}\" password=\"{admin_password}\"");
        let mut server = format!(
            "listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n\
             advertised.listeners=CLIENT://{host}:{port}\n\
             inter.broker.listener.name=CLIENT\n\
             sasl.enabled.mechanisms=PLAIN\n\
             sasl.mechanism.inter.broker.protocol=PLAIN\n\
             listener.name.client.plain.sasl.jaas.config={plain} {myself} {users};\n\
             super.users=User:{ADMIN}\n\
             allow.everyone.if.no.acl.found=false\n\
             log.dirs={data}\n\
             num.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            data = dir.join("data").display(),
        );
        let max = format!("{}KB", self.options.authorizer_log_max_kib);
        let log = dir.join("logs/kafka-authorizer.log");
        match self.mode {
            Mode::Kraft => {
                server.push_str(&format!(
                    "process.roles=broker,controller\n\
                     node.id=1\n\
                     controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
                     listeners=CLIENT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
                     controller.listener.names=CONTROLLER\n\
                     sasl.mechanism.controller.protocol=PLAIN\n\
                     listener.name.controller.plain.sasl.jaas.config={plain} {myself} user_{ADMIN}=\"{admin_password}\";\n\
                     authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
                ));
                let layout = "[%d] %p %m (%c)%n";
                self.write(
                    "server-log4j2.properties",
                    &format!(
                        "status = warn\n\
                         appender.stdout.type = Console\n\
                         appender.stdout.name = STDOUT\n\
                         appender.stdout.layout.type = PatternLayout\n\
                         appender.stdout.layout.pattern = {layout}\n\
                         appender.authorizer.type = RollingFile\n\
                         appender.authorizer.name = AUTHORIZER\n\
                         appender.authorizer.fileName = {log}\n\
                         appender.authorizer.filePattern = {log}.%i\n\
                         appender.authorizer.layout.type = PatternLayout\n\
                         appender.authorizer.layout.pattern = {layout}\n\
                         appender.authorizer.policies.type = Policies\n\
                         appender.authorizer.policies.size.type = SizeBasedTriggeringPolicy\n\
                         appender.authorizer.policies.size.size = {max}\n\
                         appender.authorizer.strategy.type = DefaultRolloverStrategy\n\
                         appender.authorizer.strategy.max = 1000\n\
                         rootLogger.level = INFO\n\
                         rootLogger.appenderRef.stdout.ref = STDOUT\n\
                         logger.authorizer.name = kafka.authorizer.logger\n\
                         logger.authorizer.level = DEBUG\n\
                         logger.authorizer.additivity = false\n\
                         logger.authorizer.appenderRef.file.ref = AUTHORIZER\n",
                        log = log.display()
                    ),
                )?;
                self.write(
                    "tools-log4j2.properties",
                    &format!(
                        "status = warn\n\
                         appender.stderr.type = Console\n\
                         appender.stderr.name = STDERR\n\
                         appender.stderr.target = SYSTEM_ERR\n\
                         appender.stderr.layout.type = PatternLayout\n\
                         appender.stderr.layout.pattern = {layout}\n\
                         rootLogger.level = WARN\n\
                         rootLogger.appenderRef.stderr.ref = STDERR\n"
                    ),
                )?;
            }
            Mode::ZooKeeper => {
                server.push_str(&format!(
                    "broker.id=1\n\
                     zookeeper.connect=127.0.0.1:{zookeeper_port}\n\
                     listeners=CLIENT://{host}:{port}\n\
                     authorizer.class.name=kafka.security.authorizer.AclAuthorizer\n"
                ));
                self.write(
                    "zookeeper.properties",
                    &format!(
                        "dataDir={}\nclientPort={zookeeper_port}\nclientPortAddress=127.0.0.1\n\
                         maxClientCnxns=0\nadmin.enableServer=false\n",
                        dir.join("zookeeper").display()
                    ),
                )?;
                let layout = "[%d] %p %m (%c)%n";
                self.write(
                    "server-log4j.properties",
                    &format!(
                        "log4j.rootLogger=INFO, stdout\n\
                         log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n\
                         log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n\
                         log4j.appender.stdout.layout.ConversionPattern={layout}\n\
                         log4j.appender.authorizer=org.apache.log4j.RollingFileAppender\n\
                         log4j.appender.authorizer.File={log}\n\
                         log4j.appender.authorizer.MaxFileSize={max}\n\
                         log4j.appender.authorizer.MaxBackupIndex=1000\n\
                         log4j.appender.authorizer.layout=org.apache.log4j.PatternLayout\n\
                         log4j.appender.authorizer.layout.ConversionPattern={layout}\n\
                         log4j.logger.kafka.authorizer.logger=DEBUG, authorizer\n\
                         log4j.additivity.kafka.authorizer.logger=false\n",
                        log = log.display()
                    ),
                )?;
                self.write(
                    "tools-log4j.properties",
                    &format!(
                        "log4j.rootLogger=WARN, stderr\n\
                         log4j.appender.stderr=org.apache.log4j.ConsoleAppender\n\
                         log4j.appender.stderr.Target=System.err\n\
                         log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n\
                         log4j.appender.stderr.layout.ConversionPattern={layout}\n"
                    ),
                )?;
            }
        }
        self.write("server.properties", &server)?;
        for user in std::iter::once(ADMIN).chain(self.options.users.iter().map(String::as_str)) {
            self.write(
                &format!("client-{user}.properties"),
                &format!(
                    "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n\
                     sasl.jaas.config={plain} username=\"{user}\" password=\"{}\";\n",
                    password(user)
                ),
            )?;
        }
        Ok(())
    }

    /// KRaft: `kafka-storage format` with a fresh cluster id.
    fn format_storage(&self) -> Result<()> {
        use base64::Engine as _;
        let started = Instant::now();
        let cluster_id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        let mut command = self.java("128m", "32m", "tools-log");
        command
            .args([
                "kafka.tools.StorageTool",
                "format",
                "-t",
                &cluster_id,
                "-c",
                "server.properties",
            ])
            .stdin(Stdio::null());
        let output = command.output().with_context(|| format!("running {command:?}"))?;
        if !output.status.success() {
            bail!(
                "formatting the KRaft storage failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        eprintln!(
            "kafka {}: KRaft storage formatted in {:.1?}",
            self.options.version,
            started.elapsed()
        );
        Ok(())
    }

    /// Starts a JVM with its stdout and stderr in `out` and its pid in `<name>.pid` (for the
    /// watchdog).
    fn spawn_jvm(&self, mut command: Command, name: &str, out: &Path) -> Result<Running> {
        let file = std::fs::File::create(out).with_context(|| format!("{}", out.display()))?;
        let running = Running(
            command
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .with_context(|| format!("starting {command:?}"))?,
        );
        self.write(&format!("{name}.pid"), &running.0.id().to_string())?;
        Ok(running)
    }

    fn start_zookeeper(&mut self, port: u16) -> Result<()> {
        let started = Instant::now();
        eprintln!("kafka {}: starting ZooKeeper on 127.0.0.1:{port}", self.options.version);
        let mut command = self.java("128m", "32m", "server-log");
        command.args(["org.apache.zookeeper.server.quorum.QuorumPeerMain", "zookeeper.properties"]);
        let out = self.dir.path().join("zookeeper.out");
        let running = self.spawn_jvm(command, "zookeeper", &out)?;
        self.zookeeper = Some(running);
        // ZooKeeper logs that it binds its client port once it is about to serve.
        self.wait_for_output("ZooKeeper", &out, &["binding to port"], true)?;
        eprintln!("kafka {}: ZooKeeper up in {:.1?}", self.options.version, started.elapsed());
        Ok(())
    }

    fn start_kafka(&mut self) -> Result<()> {
        let started = Instant::now();
        self.starts += 1;
        eprintln!(
            "kafka {}: starting the broker ({}) on {}{}",
            self.options.version,
            match self.mode {
                Mode::Kraft => "KRaft, StandardAuthorizer",
                Mode::ZooKeeper => "ZooKeeper, AclAuthorizer",
            },
            self.bootstrap(),
            self.options.netns.as_deref().map(|n| format!(" in {n}")).unwrap_or_default()
        );
        let mut command = self.java("256m", "64m", "server-log");
        command.args(["kafka.Kafka", "server.properties"]);
        let out = self.server_log();
        let running = self.spawn_jvm(command, "kafka", &out)?;
        self.kafka = Some(running);
        self.wait_for_output(
            "the Kafka broker",
            &out,
            // KRaft, ZooKeeper mode.
            &["Kafka Server started", "] started (kafka.server.KafkaServer)"],
            false,
        )?;
        eprintln!("kafka {}: broker up in {:.1?}", self.options.version, started.elapsed());
        Ok(())
    }

    /// Waits until `out` holds one of `markers`; an error with the end of `out` if the JVM
    /// exits or takes longer than [`START_TIMEOUT`].
    fn wait_for_output(
        &mut self,
        what: &str,
        out: &Path,
        markers: &[&str],
        zookeeper: bool,
    ) -> Result<()> {
        let started = Instant::now();
        let mut announced = Duration::ZERO;
        loop {
            let text = std::fs::read_to_string(out).unwrap_or_default();
            if markers.iter().any(|m| text.contains(m)) {
                return Ok(());
            }
            let jvm = if zookeeper { self.zookeeper.as_mut() } else { self.kafka.as_mut() };
            let exited = match jvm {
                Some(jvm) => jvm.0.try_wait()?,
                None => bail!("{what} is not running"),
            };
            let tail: String = {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            };
            if let Some(status) = exited {
                bail!(
                    "{what} exited ({status}) before it served; its last lines ({}):\n{tail}",
                    out.display()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{what} did not start within {START_TIMEOUT:?} (a busy machine? its output is {}); its last lines:\n{tail}",
                    out.display()
                );
            }
            if started.elapsed() - announced >= Duration::from_secs(10) {
                announced = started.elapsed();
                eprintln!(
                    "kafka {}: still waiting for {what} ({:.0?})",
                    self.options.version,
                    started.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
