//! A real etcd + kube-apiserver (and optionally kube-controller-manager) on loopback.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::certs::{self, Pki};
use crate::proc::{self, tail};
use crate::tools::tools;

/// Field manager used for everything the harness itself applies.
pub const FIELD_MANAGER: &str = "dirsync-testenv";

/// How to start a control plane. [`Options::from_env`] reads the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where run directories (`run-*`) are created. Default `$TMPDIR/dirsync-testenv`
    /// (`DIRSYNC_TESTENV_DIR`).
    pub data_root: PathBuf,
    /// CRD manifests to install (`*.yaml`, `*.yml`). Default `DIRSYNC_CRDS_DIR`, else the
    /// workspace's `crds/`. A missing or empty directory installs nothing.
    pub crds_dir: Option<PathBuf>,
    /// Also run kube-controller-manager (garbage collection of owned objects, namespace deletion,
    /// default ServiceAccounts). Default: `DIRSYNC_TESTENV_CONTROLLER_MANAGER` (`1`/`0`), else on
    /// when the binary is installed.
    pub controller_manager: bool,
    /// Budget for one start attempt. Default 60 s (`DIRSYNC_TESTENV_START_TIMEOUT`, seconds).
    pub timeout: Duration,
    /// How many times to try when a start fails because a port was taken meanwhile.
    pub attempts: u32,
}

impl Options {
    pub fn from_env() -> Options {
        let data_root = std::env::var_os("DIRSYNC_TESTENV_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("dirsync-testenv"));
        let crds_dir = Some(
            std::env::var_os("DIRSYNC_CRDS_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("..")
                        .join("crds")
                }),
        );
        let controller_manager =
            match std::env::var("DIRSYNC_TESTENV_CONTROLLER_MANAGER").as_deref() {
                Ok("1") | Ok("true") | Ok("yes") => true,
                Ok("0") | Ok("false") | Ok("no") => false,
                _ => tools().try_bin("kube-controller-manager").is_ok(),
            };
        let timeout = std::env::var("DIRSYNC_TESTENV_START_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(60));
        Options {
            data_root,
            crds_dir,
            controller_manager,
            timeout,
            attempts: 3,
        }
    }
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The processes and the run directory; stopped and removed on drop.
struct Running {
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl Running {
    fn spawn(
        &mut self,
        name: &'static str,
        bin: &Path,
        args: Vec<String>,
        marker: &str,
    ) -> anyhow::Result<u32> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        self.procs.push(Proc { name, child, log });
        proc::watch_pid(pid, marker)?;
        Ok(pid)
    }

    /// Fails (with the end of its log) if one of the processes has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    p.name,
                    p.log.display(),
                    tail(&p.log, 30)
                );
            }
        }
        Ok(())
    }

    fn log_tails(&self) -> String {
        self.procs
            .iter()
            .map(|p| {
                format!(
                    "--- last lines of {} ---\n{}",
                    p.log.display(),
                    tail(&p.log, 25)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running control plane. Dropping it stops the processes and removes the data directory;
/// the shared one ([`ControlPlane::shared`]) lives until the test process ends, when the
/// watchdog stops it (see [`crate::proc`]).
pub struct ControlPlane {
    running: Mutex<Running>,
    dir: PathBuf,
    port: u16,
    server: String,
    kubeconfig: PathBuf,
    config: Config,
    pki: Pki,
    version: String,
    startup: Duration,
    pids: Vec<(String, u32)>,
    controller_manager: bool,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("dir", &self.dir)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The control plane shared by all tests of this test binary, started on first use
    /// (blocking; callable from sync code and from inside a tokio runtime). Panics with the
    /// reason — including the end of the etcd/apiserver logs — when it cannot start.
    pub fn shared() -> &'static ControlPlane {
        let res = SHARED
            .get_or_init(|| ControlPlane::start(Options::from_env()).map_err(|e| format!("{e:#}")));
        match res {
            Ok(cp) => cp,
            Err(e) => panic!("the shared test control plane did not start:\n{e}"),
        }
    }

    /// A control plane of its own, for a test that needs one (stopped when dropped).
    pub fn start_dedicated() -> ControlPlane {
        ControlPlane::start(Options::from_env())
            .unwrap_or_else(|e| panic!("control plane did not start:\n{e:#}"))
    }

    /// Starts a control plane (blocking). Runs its own small runtime on a separate thread, so it
    /// may be called from anywhere.
    pub fn start(opts: Options) -> anyhow::Result<ControlPlane> {
        std::thread::Builder::new()
            .name("dirsync-testenv-start".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(start_with_retries(opts))
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("the control plane start thread panicked"))?
    }

    /// A new client (needs a tokio runtime; make one per test, never share one across runtimes).
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone())
            .expect("building a kube client for the test control plane")
    }

    /// A client with no credentials (the API server sees `system:anonymous`).
    pub fn anonymous_client(&self) -> Client {
        let mut config = self.config.clone();
        config.auth_info = Default::default();
        Client::try_from(config).expect("building an anonymous kube client")
    }

    /// The kube client configuration (admin, `system:masters`).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A kubeconfig file for kubectl/helm (admin, `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT`, also the service-account issuer.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The service-account issuer (`--service-account-issuer`).
    pub fn service_account_issuer(&self) -> &str {
        &self.server
    }

    /// The server's `gitVersion` (e.g. `v1.37.2`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How long the start took (processes, readiness, CRDs).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The run directory (logs, data, certificates, kubeconfig).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `(name, pid)` of the processes.
    pub fn pids(&self) -> &[(String, u32)] {
        &self.pids
    }

    /// Whether kube-controller-manager runs (garbage collection, namespace deletion).
    pub fn has_controller_manager(&self) -> bool {
        self.controller_manager
    }

    /// `kubectl` with `KUBECONFIG` set to this control plane.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(tools().kubectl());
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// `helm` with `KUBECONFIG` set and its cache/config/data kept inside the run directory.
    pub fn helm(&self) -> Command {
        let mut c = Command::new(tools().helm());
        let h = self.dir.join("helm");
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"));
        c
    }

    /// Creates a fresh namespace `<prefix>-<n>` for one test (labelled
    /// `dirsync-testenv/test=<prefix>`).
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        static N: AtomicU32 = AtomicU32::new(0);
        let mut base: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        base.truncate(40);
        let base = base.trim_matches('-').to_string();
        let base = if base.is_empty() {
            "test".to_string()
        } else {
            base
        };
        let name = format!(
            "{base}-{}-{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let client = self.client();
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"dirsync-testenv/test": base}},
        }))
        .expect("namespace object");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace { name, client }
    }

    /// Stops the processes and removes the run directory now (dropping does the same).
    pub fn stop(&self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
    }

    /// The last lines of each process's log.
    pub fn log_tails(&self) -> String {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_tails()
    }
}

/// A namespace made for one test, with a client whose default namespace it is.
#[derive(Clone)]
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client (created on the runtime that called [`ControlPlane::namespace`]).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `Api<K>` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl std::ops::Deref for TestNamespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

async fn start_with_retries(opts: Options) -> anyhow::Result<ControlPlane> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let swept = proc::sweep_stale_runs(&opts.data_root);
    if swept > 0 {
        eprintln!(
            "dirsync-testenv: removed {swept} stale run(s) under {}",
            opts.data_root.display()
        );
    }
    let mut attempt = 1;
    loop {
        match try_start(&opts).await {
            Ok(cp) => return Ok(cp),
            Err(e) => {
                let text = format!("{e:#}");
                let port_race = text.contains("address already in use") || text.contains("bind: ");
                if port_race && attempt < opts.attempts {
                    eprintln!(
                        "dirsync-testenv: port taken during start (attempt {attempt}), retrying"
                    );
                    attempt += 1;
                    continue;
                }
                return Err(e);
            }
        }
    }
}

async fn try_start(opts: &Options) -> anyhow::Result<ControlPlane> {
    let t0 = Instant::now();
    let deadline = t0 + opts.timeout;
    let tools = tools();
    let etcd_bin = tools.try_bin("etcd")?;
    let apiserver_bin = tools.try_bin("kube-apiserver")?;
    let kcm_bin = if opts.controller_manager {
        Some(tools.try_bin("kube-controller-manager")?)
    } else {
        None
    };

    let dir = proc::new_run_dir(&opts.data_root)?;
    proc::watch_dir(&dir)?;
    let mut running = Running {
        dir: dir.clone(),
        procs: Vec::new(),
    };
    let dir_s = dir.to_str().context("run dir is not UTF-8")?.to_string();

    let pki = certs::generate(&dir.join("pki"))?;
    let ports = proc::free_ports(3)?;
    let (etcd_port, peer_port, api_port) = (ports[0], ports[1], ports[2]);
    let mut pids = Vec::new();

    // etcd
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let etcd_data = format!("--data-dir={dir_s}/etcd");
    let etcd_args = vec![
        "--name=default".to_string(),
        etcd_data.clone(),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        "--unsafe-no-fsync=true".to_string(),
        "--log-level=warn".to_string(),
    ];
    pids.push((
        "etcd".to_string(),
        running.spawn("etcd", &etcd_bin, etcd_args, &etcd_data)?,
    ));
    loop {
        running.check_alive()?;
        if let Ok((200, body)) = proc::http_get(etcd_port, "/health", &[])
            && body.contains("\"health\":\"true\"")
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "etcd not healthy after {:?}\n{}",
                opts.timeout,
                running.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let etcd_ready = t0.elapsed();

    // kube-apiserver
    let server = format!("https://127.0.0.1:{api_port}");
    let cert_dir = format!("--cert-dir={dir_s}/pki");
    let p = |p: &Path| p.display().to_string();
    let api_args = vec![
        format!("--etcd-servers={etcd_url}"),
        cert_dir.clone(),
        format!("--tls-cert-file={}", p(&pki.serving_crt)),
        format!("--tls-private-key-file={}", p(&pki.serving_key)),
        format!("--client-ca-file={}", p(&pki.ca_crt)),
        format!("--secure-port={api_port}"),
        "--bind-address=127.0.0.1".to_string(),
        "--service-cluster-ip-range=10.0.0.0/24".to_string(),
        "--allow-privileged=true".to_string(),
        "--disable-admission-plugins=ServiceAccount".to_string(),
        "--authorization-mode=RBAC".to_string(),
        format!("--service-account-issuer={server}"),
        // Without this the discovery document points at the advertise address (the host's
        // first non-loopback IP), which clients here must not use.
        format!("--service-account-jwks-uri={server}/openid/v1/jwks"),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        "--profiling=false".to_string(),
    ];
    pids.push((
        "kube-apiserver".to_string(),
        running.spawn("kube-apiserver", &apiserver_bin, api_args, &cert_dir)?,
    ));

    let kubeconfig = dir.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &server, &pki)?;
    let kc = Kubeconfig::read_from(&kubeconfig).context("reading the kubeconfig just written")?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("kube config from the kubeconfig")?;
    config.connect_timeout = Some(Duration::from_secs(5));
    let client = Client::try_from(config.clone())?;

    // /readyz
    loop {
        running.check_alive()?;
        let last = match client
            .request_text(http::Request::get("/readyz").body(Vec::new())?)
            .await
        {
            Ok(body) if body.trim() == "ok" => break,
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver not ready after {:?} (last /readyz answer: {last})\n{}",
                opts.timeout,
                running.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api_ready = t0.elapsed();

    // namespace default
    let namespaces: Api<Namespace> = Api::all(client.clone());
    loop {
        if matches!(namespaces.get_opt("default").await, Ok(Some(_))) {
            break;
        }
        running.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "namespace default did not appear within {:?}\n{}",
                opts.timeout,
                running.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Anonymous users may read the service-account issuer's OIDC discovery document and JWKS
    // (what a relying party, e.g. Entra ID's workload identity federation, fetches).
    let crb = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "dirsync-testenv:service-account-issuer-discovery-unauthenticated"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
    });
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    crbs.patch(
        "dirsync-testenv:service-account-issuer-discovery-unauthenticated",
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crb),
    )
    .await
    .context("binding system:service-account-issuer-discovery to system:unauthenticated")?;

    // CRDs, before the controller-manager starts, so that its garbage collector's first
    // discovery already knows them (it re-discovers only every 30 s).
    let crds = install_crds(&client, opts.crds_dir.as_deref(), deadline, &mut running).await?;

    // kube-controller-manager (optional)
    if let Some(kcm_bin) = kcm_bin {
        let kcm_kubeconfig = format!("--kubeconfig={}", p(&kubeconfig));
        let kcm_args = vec![
            kcm_kubeconfig.clone(),
            "--leader-elect=false".to_string(),
            "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,root-ca-cert-publisher".to_string(),
            format!("--service-account-private-key-file={}", p(&pki.sa_key)),
            format!("--root-ca-file={}", p(&pki.ca_crt)),
            "--use-service-account-credentials=false".to_string(),
            "--secure-port=0".to_string(),
            "--concurrent-gc-syncs=5".to_string(),
        ];
        pids.push((
            "kube-controller-manager".to_string(),
            running.spawn(
                "kube-controller-manager",
                &kcm_bin,
                kcm_args,
                &kcm_kubeconfig,
            )?,
        ));
    }

    // Wait until the controller-manager works (the default ServiceAccount in `default`).
    if opts.controller_manager {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        loop {
            if matches!(sas.get_opt("default").await, Ok(Some(_))) {
                break;
            }
            running.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "kube-controller-manager did not create the default ServiceAccount within {:?}\n{}",
                    opts.timeout,
                    running.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let version = client
        .apiserver_version()
        .await
        .context("GET /version")?
        .git_version;
    let startup = t0.elapsed();
    eprintln!(
        "dirsync-testenv: Kubernetes {version} ready at {server} in {:.1} s (etcd {:.1} s, apiserver ready {:.1} s{}, {} CRD(s)); data in {}",
        startup.as_secs_f64(),
        etcd_ready.as_secs_f64(),
        api_ready.as_secs_f64(),
        if opts.controller_manager {
            ", with kube-controller-manager"
        } else {
            ""
        },
        crds,
        dir.display()
    );
    Ok(ControlPlane {
        running: Mutex::new(running),
        dir,
        port: api_port,
        server,
        kubeconfig,
        config,
        pki,
        version,
        startup,
        pids,
        controller_manager: opts.controller_manager,
    })
}

fn write_kubeconfig(path: &Path, server: &str, pki: &Pki) -> anyhow::Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: dirsync-testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {crt}
    client-key-data: {key}
contexts:
- name: dirsync-testenv
  context:
    cluster: dirsync-testenv
    user: admin
    namespace: default
current-context: dirsync-testenv
",
        ca = b64(&pki.ca_pem),
        crt = b64(&pki.admin_crt_pem),
        key = b64(&pki.admin_key_pem),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Reads every CRD from `dir` (`*.yaml`/`*.yml`, several documents per file allowed).
pub fn read_crds(dir: &Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", f.display()))?;
        for doc in docs {
            if doc.is_null() {
                continue;
            }
            if doc.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                continue;
            }
            out.push(
                serde_json::from_value(doc)
                    .with_context(|| format!("{} is not a valid CRD", f.display()))?,
            );
        }
    }
    Ok(out)
}

/// Applies (server-side) the CRDs and waits until they are Established.
pub async fn apply_crds(
    client: &Client,
    crds: &[CustomResourceDefinition],
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd
            .metadata
            .name
            .clone()
            .context("CRD without metadata.name")?;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
    }
    let deadline = Instant::now() + timeout;
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let current = api
                .get(&name)
                .await
                .with_context(|| format!("reading CRD {name}"))?;
            let established = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "CRD {name} not Established within {timeout:?}: {:?}",
                    current.status
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn install_crds(
    client: &Client,
    dir: Option<&Path>,
    deadline: Instant,
    running: &mut Running,
) -> anyhow::Result<usize> {
    let Some(dir) = dir else { return Ok(0) };
    let crds = read_crds(dir)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(10));
    apply_crds(client, &crds, left).await.map_err(|e| {
        let _ = running.check_alive();
        e.context(running.log_tails())
    })?;
    Ok(crds.len())
}
